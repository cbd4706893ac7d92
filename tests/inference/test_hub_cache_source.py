"""The README's flow: a fine-tune pushed as `username/deepseek-summarizer` loads back as DeepSeek-OCR.

A hub id is classified by the config.json of its snapshot, never by its name: here models live in a local hub cache
(offline, as after a download) under ids without "deepseek-ocr" in them, and load as DeepSeek-OCR in the
summarizer, the infer CLI and training; a BART under an id that does say "deepseek-ocr" stays a seq2seq model.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import LoadSettings
from inference.summarizer import DeepSeekSummarizer
from tests.inference.conftest import TINY_GENERATION, TINY_RENDER
from tests.model.hub_cache import cache_model, use_cache

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "someone/my-summarizer"
BART_ID = "someone/deepseek-ocr-bart"
TEXT = "The committee met on Tuesday and approved the budget for the new library after a long debate."


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    """A hub cache holding the tiny summarizer as HUB_ID and the tiny BART preset as BART_ID, used offline."""
    from model.checkpoint.presets import build_tiny_bart

    bart = tmp_path / "bart"
    tokenizer, model = build_tiny_bart()
    model.save_pretrained(bart)
    tokenizer.save_pretrained(bart)
    cache = tmp_path / "hub"
    cache_model(cache, HUB_ID, tiny_model_dir)
    cache_model(cache, BART_ID, bart)
    use_cache(monkeypatch, cache)
    return cache


def _run(*command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # HF_HUB_CACHE and HF_HUB_OFFLINE from `use_cache`
    return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_summarizer_loads_a_cached_hub_id_as_deepseek_ocr(hub_cache, summarizer):
    loaded = DeepSeekSummarizer.from_pretrained(HUB_ID, LoadSettings(device="cpu"))
    assert loaded.model_type == "deepseek-ocr"
    assert (loaded.render_config, loaded.generation) == (TINY_RENDER, TINY_GENERATION)
    assert loaded.summarize_text(TEXT).summary == summarizer.summarize_text(TEXT).summary  # the same weights


def test_cached_bart_under_a_deepseek_ocr_name_loads_as_seq2seq(hub_cache):
    assert DeepSeekSummarizer.from_pretrained(BART_ID, LoadSettings(device="cpu")).model_type == "seq2seq"


@pytest.mark.slow  # the command in a fresh process
def test_infer_cli_reads_a_cached_hub_id_as_deepseek_ocr(hub_cache, tmp_path):
    article = tmp_path / "article.txt"
    article.write_text(TEXT, encoding="utf-8")
    done = _run("inference.infer", "--model_path", HUB_ID, "--input_file", str(article), "--max_length", "3",
                "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["pages"] == 1 and out["vision_tokens"] == 64  # one tiny-mode page: DeepSeek-OCR read pixels


@pytest.mark.slow  # training in a fresh process
def test_training_decides_the_task_from_the_cached_config(hub_cache, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": TEXT, "summary": "The library budget passed."}) + "\n", encoding="utf-8")
    done = _run("training.train", "--model-name", HUB_ID, "--train", str(train), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"Dry run of {HUB_ID} on the meta device" in done.stdout  # the DeepSeek-OCR report
    done = _run("training.train", "--model-name", BART_ID, "--train", str(train), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"model {BART_ID}: bart," in done.stdout  # the seq2seq baseline's report
