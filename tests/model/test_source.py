"""Where a model comes from is decided once (model/checkpoint/source.py), for every command and loader: from its
config.json, a hub id's after fetching it, never from its name."""
import json

import pytest

from model.checkpoint.source import ModelSourceError, resolve_model_source
from model.configuration import TINY_PRESET, DeepSeekOCRConfig
from tests.model.hub_cache import cache_model, use_cache


def _folder(path, config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_kinds(tmp_path):
    assert resolve_model_source("tiny-random").kind == "preset"
    project = _folder(tmp_path / "p", {"model_type": DeepSeekOCRConfig.model_type})
    assert resolve_model_source(str(project)).kind == "project"
    official = _folder(tmp_path / "o", {"model_type": "deepseek_vl_v2", "language_config": {}})
    assert resolve_model_source(str(official)).kind == "official"
    seq2seq = _folder(tmp_path / "s", {"model_type": "bart", "is_encoder_decoder": True})
    source = resolve_model_source(str(seq2seq))
    assert source.kind == "seq2seq" and not source.has_backbone and source.path == seq2seq


def test_local_folders_are_classified_by_their_config_not_their_name(tiny_model_dir, seq2seq_model_dir, tmp_path):
    official = _folder(tmp_path / "bart-baseline",
                       DeepSeekOCRConfig.preset(TINY_PRESET).to_official_config("float32"))
    misnamed = {  # folder name -> (what it holds, its kind)
        "deepseek-ocr-summarizer": (seq2seq_model_dir, "seq2seq"),
        "DeepSeek-OCR": (seq2seq_model_dir, "seq2seq"),
        "summarizer-v2": (tiny_model_dir, "project"),
        "bart-baseline": (official, "official"),
    }
    for name, (holds, kind) in misnamed.items():
        folder = tmp_path / "named" / name
        folder.parent.mkdir(exist_ok=True)
        folder.symlink_to(holds, target_is_directory=True)
        source = resolve_model_source(str(folder))
        assert (source.kind, source.has_backbone) == (kind, kind != "seq2seq"), name


def test_hub_ids_are_classified_by_their_config_not_their_name(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "cache")
    cached = {
        "deepseek-ai/DeepSeek-OCR": ("official", {"model_type": "deepseek_vl_v2", "language_config": {}}),
        "facebook/bart-base": ("seq2seq", {"model_type": "bart", "is_encoder_decoder": True}),
        "someone/deepseek-summarizer": ("project", {"model_type": DeepSeekOCRConfig.model_type}),
        "someone/deepseek-ocr-but-bart": ("seq2seq", {"model_type": "bart"}),
    }
    for hub_id, (kind, config) in cached.items():
        snapshot = cache_model(tmp_path / "cache", hub_id, _folder(tmp_path / hub_id.replace("/", "_"), config))
        source = resolve_model_source(hub_id)
        assert (source.kind, source.hub_id, source.path) == (kind, hub_id, snapshot), hub_id
        assert source.has_backbone == (kind != "seq2seq"), hub_id


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


def test_offline_hub_id_names_the_way_out(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "empty-cache")
    for name, weights in (("deepseek-ai/DeepSeek-OCR", True), ("someone/unknown-model", False)):
        with pytest.raises(ModelSourceError, match="not available offline .* 'tiny-random'"):
            resolve_model_source(name, weights=weights)


def test_the_official_hub_id_is_known_offline_without_its_weights(tmp_path, monkeypatch):
    """The README's dry run reads the official architecture offline; only its weights need the hub."""
    from model.checkpoint.convert import model_config

    use_cache(monkeypatch, tmp_path / "empty-cache")
    source = resolve_model_source("deepseek-ai/DeepSeek-OCR")
    assert (source.kind, source.path, source.task) == ("official", None, "deepseek-ocr")
    assert model_config(source).to_dict() == DeepSeekOCRConfig().to_dict()
