"""`--export DIR`: a DeepSeek-OCR run ends with its final model in the official layout; a LoRA run's mid-training
checkpoint exports merged; a busy export folder is refused before any training."""
from __future__ import annotations

import json
import shutil

import torch

from model.checkpoint.convert import load_model
from model.checkpoint.export import main as export_main
from tests.training.conftest import TINY_BART, base_args, model_args
from training.train import main


def _same_weights(first: str, second: str) -> bool:
    a, b = load_model(first).state_dict(), load_model(second).state_dict()
    return set(a) == set(b) and all(torch.equal(a[key], value) for key, value in b.items())


def test_lora_run_exports_its_final_model_and_checkpoints_merged(tmp_path, prepared, tiny_config):
    out, export = tmp_path / "run", tmp_path / "official"
    argv = [*base_args(prepared, TINY_BART, tiny_config, out, "--max-steps", "2"), *model_args("deepseek"),
            "--lora", "--export", str(export), "--export-dtype", "float32"]
    assert main(argv) == 0
    assert json.loads((export / "config.json").read_text())["model_type"] == "deepseek_vl_v2"
    assert json.loads((export / "render_config.json").read_text())["mode"] == "tiny"
    assert _same_weights(str(export), str(out))
    assert not _same_weights(str(out), "tiny-random")  # the adapters did change the decoder
    # checkpoint-2 holds the same step with its adapters still separate: exported, it is the final model.
    assert export_main(["--model", str(out / "checkpoint-2"), "--output", str(tmp_path / "ckpt"), "--dtype",
                        "float32"]) == 0
    assert _same_weights(str(tmp_path / "ckpt"), str(out))
    # Away from its run folder the adapters' alpha is unknown: refused, not guessed.
    lone = shutil.copytree(out / "checkpoint-2", tmp_path / "lone")
    assert export_main(["--model", str(lone), "--output", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_busy_export_folder_is_refused_before_training(tmp_path, prepared, tiny_config, capsys):
    out, export = tmp_path / "run", tmp_path / "official"
    export.mkdir()
    (export / "notes.txt").write_text("mine")
    argv = [*base_args(prepared, TINY_BART, tiny_config, out), *model_args("deepseek"),
            "--export", str(export)]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in export.iterdir()] == ["notes.txt"]
