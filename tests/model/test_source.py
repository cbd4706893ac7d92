"""Where a model comes from is decided once (model/source.py), for every command and loader."""
import json

import pytest

from model.configuration import DeepSeekOCRConfig
from model.checkpoint.source import ModelSourceError, download, resolve_model_source


def _folder(path, config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_kinds(tmp_path):
    assert resolve_model_source("tiny-random").kind == "preset"
    hub = resolve_model_source("deepseek-ai/DeepSeek-OCR")
    assert hub.kind == "hub" and hub.is_deepseek_ocr and hub.path is None
    bart = resolve_model_source("facebook/bart-base")
    assert bart.kind == "hub" and not bart.is_deepseek_ocr
    project = _folder(tmp_path / "p", {"model_type": DeepSeekOCRConfig.model_type})
    assert resolve_model_source(str(project)).kind == "project"
    official = _folder(tmp_path / "o", {"model_type": "deepseek_vl_v2", "language_config": {}})
    assert resolve_model_source(str(official)).kind == "official"
    seq2seq = _folder(tmp_path / "s", {"model_type": "bart", "is_encoder_decoder": True})
    source = resolve_model_source(str(seq2seq))
    assert source.kind == "seq2seq" and not source.is_deepseek_ocr and source.path == seq2seq


@pytest.mark.parametrize("name, message", [
    ("./nonexistent", "model folder not found: ./nonexistent"),
    ("runs/a/b", "model folder not found: runs/a/b"),
    ("no such model", "neither a preset"),
])
def test_paths_that_do_not_exist_are_not_hub_ids(name, message):
    with pytest.raises(ModelSourceError, match=message):
        resolve_model_source(name)


def test_folders_that_hold_no_usable_model(tmp_path):
    with pytest.raises(ModelSourceError, match="has no config.json"):
        resolve_model_source(str(tmp_path))
    _folder(tmp_path / "gpt", {"model_type": "gpt2"})
    with pytest.raises(ModelSourceError, match="'gpt2' model: neither DeepSeek-OCR"):
        resolve_model_source(str(tmp_path / "gpt"))


def test_offline_hub_id_names_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="not available offline .* 'tiny-random'"):
        download(resolve_model_source("deepseek-ai/DeepSeek-OCR"))
