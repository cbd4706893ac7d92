"""Tiny shared fixtures for the training tests: a prepared SciTLDR sample and the models they train.

The seq2seq baseline trains the `tiny-random-bart` preset (model/checkpoint/presets.py): a random 2-layer BART
with a 400-token byte-level BPE, so a training step takes milliseconds and nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.jobs import PrepareJob
from model.checkpoint.presets import TINY_SEQ2SEQ as TINY_BART

REPO = Path(__file__).resolve().parents[2]
TINY_STEPS = ["--max-steps", "6", "--batch-size", "2", "--report-to", "none", "--seed", "7"]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder (train/val/test JSONL) of a few bundled SciTLDR records, as prepare_datasets writes it."""
    from data.prepare_datasets import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareJob(output_dir=str(out), max_samples=8), progress=False)
    return out


@pytest.fixture
def tiny_config(tmp_path, prepared) -> Path:
    """A config file for fast CPU runs: short sequences, logging and checkpoints every few steps."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "gradient_accumulation_steps": 1, "max_length": 24, "max_source_length": 96, "gradient_checkpointing": False,
        "optimizer": {"learning_rate": 3e-3, "warmup_steps": 0},
        "log_interval": 1, "save_interval": 2, "generation": {"max_new_tokens": 8},
    }))
    return path


def run_cli(args: list[str], timeout: float = 240, env: dict | None = None, cwd: Path = REPO
            ) -> subprocess.CompletedProcess:
    """`python -m training.train ARGS` in a fresh process (in `cwd`), offline, on one thread."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process training on one thread: on this small shared machine more threads only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_args(kind: str) -> list[str]:
    """The CLI flags that pick the model: the tiny BART baseline, DeepSeek-OCR's tiny-random preset, or
    DeepSeek-OCR-2's tiny-random-ocr2 (which has no tiny mode)."""
    if kind == "deepseek":
        return ["--use-deepseek-ocr", "--model-name", "tiny-random", "--mode", "tiny"]
    if kind == "deepseek-ocr-2":
        return ["--use-deepseek-ocr", "--model-name", "tiny-random-ocr2", "--mode", "small"]
    return ["--model-name", TINY_BART]


def base_args(prepared: Path, model: str, config: Path, output: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--train", str(prepared / "train.jsonl"), "--model-name", str(model),
            "--output", str(output), *TINY_STEPS, *extra]
