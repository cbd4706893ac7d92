"""A local Hugging Face hub cache built by hand, so a hub id resolves offline as it would after a download.

Layout (what huggingface_hub's snapshot_download reads with local_files_only=True):
    <cache>/models--<owner>--<name>/refs/main            the commit hash
    <cache>/models--<owner>--<name>/snapshots/<hash>/..  the repository's files
"""
import hashlib
import shutil
from pathlib import Path


def cache_model(cache: Path, repo_id: str, folder: Path) -> Path:
    """Put the files of `folder` into `cache` as the snapshot of `repo_id`; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def use_cache(monkeypatch, cache: Path) -> None:
    """Point this process (huggingface_hub reads HF_HUB_CACHE once, at import) and its children at `cache`."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
