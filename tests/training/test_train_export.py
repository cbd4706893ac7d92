"""`--export DIR`: a DeepSeek-OCR run ends with its final model in the official layout; a busy export folder is
refused before any training."""
from __future__ import annotations

import json

import torch

from model.convert import load_model
from tests.training.conftest import base_args, model_args
from training.train import main


def test_run_ends_with_an_official_export_of_the_final_model(tmp_path, prepared, tiny_bart, tiny_config):
    out, export = tmp_path / "run", tmp_path / "official"
    argv = [*base_args(prepared, tiny_bart, tiny_config, out, "--max-steps", "2"), *model_args("deepseek", tiny_bart),
            "--export", str(export), "--export-dtype", "float32"]
    assert main(argv) == 0
    assert json.loads((export / "config.json").read_text())["model_type"] == "deepseek_vl_v2"
    trained, exported = load_model(str(out)).state_dict(), load_model(str(export)).state_dict()
    assert set(exported) == set(trained)
    assert all(torch.equal(exported[key], value) for key, value in trained.items())
    assert json.loads((export / "render_config.json").read_text())["mode"] == "tiny"


def test_busy_export_folder_is_refused_before_training(tmp_path, prepared, tiny_bart, tiny_config, capsys):
    out, export = tmp_path / "run", tmp_path / "official"
    export.mkdir()
    (export / "notes.txt").write_text("mine")
    argv = [*base_args(prepared, tiny_bart, tiny_config, out), *model_args("deepseek", tiny_bart),
            "--export", str(export)]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in export.iterdir()] == ["notes.txt"]
