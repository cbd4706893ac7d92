"""Publishing: the dry-run Parquet shards round-trip text, references and pixel-equal images; the token stays secret."""
import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from data.publish_hf_datasets import PublishError, publish_dataset

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_SECRETtokenNeverShown123"


@pytest.fixture()
def prepared(tmp_path):
    """A tiny prepared directory as data.prepare_datasets writes it: JSONL records naming their PNG pages."""
    out = tmp_path / "prepared"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1), ("test", 0)):
        lines = []
        for i in range(count):
            images = []
            for page in range(1 + i % 2):
                rel = f"images/{split}/{split}{i}_p{page:03d}.png"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8), mode="L").save(out / rel)
                images.append(rel)
            record = {"id": f"{split}{i}", "text": f"Document {i} of {split}.", "summary": f"Summary {i}.",
                      "references": [f"Summary {i}.", f"Other {i}."], "images": images,
                      "render": {"pages": len(images), "mode": "tiny"}}
            lines.append(json.dumps(record) + "\n")
        (out / f"{split}.jsonl").write_text("".join(lines))
    return out


def test_dry_run_shards_round_trip_with_pixel_equal_images(prepared, tmp_path):
    result = publish_dataset(prepared, shards_dir=tmp_path / "shards")
    assert result["splits"] == {"train": 3, "validation": 1}  # the empty test split is left out
    names = sorted(p.name for p in (tmp_path / "shards" / "data").iterdir())
    assert names == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]

    loaded = datasets.load_dataset("parquet", cache_dir=str(tmp_path / "cache"), data_files={
        split: str(tmp_path / "shards" / "data" / f"{split}-*.parquet") for split in ("train", "validation")})
    for split, stem in (("train", "train"), ("validation", "val")):
        originals = [json.loads(line) for line in (prepared / f"{stem}.jsonl").read_text().splitlines()]
        rows = list(loaded[split])
        assert [r["id"] for r in rows] == [o["id"] for o in originals]
        for row, original in zip(rows, originals):
            assert (row["text"], row["summary"], row["references"]) == (
                original["text"], original["summary"], original["references"])
            assert len(row["images"]) == len(original["images"])
            for image, path in zip(row["images"], original["images"]):
                expected = Image.open(prepared / path)
                assert image.mode == expected.mode and np.array_equal(np.asarray(image), np.asarray(expected))


def test_max_shard_size_splits_into_several_shards(prepared, tmp_path):
    result = publish_dataset(prepared, shards_dir=tmp_path / "shards", max_shard_size=1000)
    assert result["num_shards"]["train"] == 3
    table = datasets.load_dataset("parquet", cache_dir=str(tmp_path / "cache"), split="train",
                                  data_files=str(tmp_path / "shards" / "data" / "train-*-of-00003.parquet"))
    assert table["id"] == ["train0", "train1", "train2"]


def test_missing_image_and_unprepared_dir_are_errors(prepared, tmp_path):
    next((prepared / "images" / "train").glob("*.png")).unlink()
    with pytest.raises(PublishError, match="missing image"):
        publish_dataset(prepared, shards_dir=tmp_path / "shards")
    with pytest.raises(PublishError, match="no prepared records"):
        publish_dataset(tmp_path / "empty", shards_dir=tmp_path / "shards")


def _cli(args, env_token=None):
    env = {**__import__("os").environ, "HF_TOKEN": env_token} if env_token else None
    return subprocess.run([sys.executable, "-m", "data.publish_hf_datasets", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_never_shows_the_token(prepared, tmp_path):
    dry = _cli([str(prepared), "--dry-run", "--token", TOKEN, "--shards-dir", str(tmp_path / "shards")])
    assert dry.returncode == 0, dry.stderr
    assert "wrote shards" in dry.stdout and (tmp_path / "shards" / "data").is_dir()
    # Offline (conftest), the push fails: a one-line error that names the repo but not the token.
    push = _cli([str(prepared), "--repo-id", "someone/data", "--private"], env_token=TOKEN)
    assert push.returncode != 0 and "someone/data" in push.stderr
    bad = _cli([str(prepared), f"--token={TOKEN}", "--max-shard-size", "huge"])
    assert bad.returncode != 0
    for result in (dry, push, bad):
        assert TOKEN not in result.stdout + result.stderr and "Traceback" not in result.stderr
    # `datasets` may draw progress bars; the error itself is one line.
    assert [line for line in push.stderr.splitlines() if "error" in line.lower()] == [
        push.stderr.strip().splitlines()[-1]]
    assert len(bad.stderr.strip().splitlines()) == 1


def test_dry_run_shards_are_the_bytes_push_to_hub_uploads(prepared, tmp_path, monkeypatch):
    """Run datasets' own shard-upload step with the upload call captured, and compare with the dry run."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_file_system import HfFileSystemResolvedRepositoryPath

    from data.publish_hf_datasets import build_dataset_dict, plan_shards, write_shards

    uploaded = {}
    monkeypatch.setattr(HfApi, "preupload_lfs_files", lambda self, repo_id, additions, **kw: uploaded.update(
        {a.path_in_repo: Path(a.path_or_fileobj).read_bytes() for a in additions}))
    dataset_dict = build_dataset_dict(prepared, tmp_path / "cache")
    num_shards = plan_shards(dataset_dict, 1500)
    assert num_shards["train"] > 1
    repo = HfFileSystemResolvedRepositoryPath(repo_type="dataset", repo_id="someone/data", revision="main",
                                              path_in_repo="")
    for split, dataset in dataset_dict.items():
        for _ in dataset._push_parquet_shards_to_hub(
                resolved_output_path=repo, data_dir="data", split=split, token=None, create_pr=False,
                max_shard_size=None, num_shards=num_shards[split], embed_external_files=True, num_proc=None):
            pass
    written = write_shards(dataset_dict, num_shards, tmp_path / "shards")
    assert {p.relative_to(tmp_path / "shards").as_posix(): p.read_bytes() for p in written} == uploaded
