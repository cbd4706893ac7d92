"""Round trips: the project's save_pretrained/from_pretrained, and official-format folders through load_model."""
import json

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint.convert import load_model
from model.checkpoint.source import ModelSourceError
from model.configuration import DeepSeekOCRConfig
from model.modeling import DeepSeekOCRForConditionalGeneration

IDS = torch.tensor([[0] + [128815] * 21 + [5, 6, 7]])


def logits(model, pixels):
    with torch.no_grad():
        return model(input_ids=IDS, pixel_values=pixels).logits


def test_native_round_trip_gives_identical_logits(tmp_path):
    model = load_model("tiny-random")
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == DeepSeekOCRConfig.model_type
    reloaded = load_model(str(tmp_path))
    assert isinstance(reloaded, DeepSeekOCRForConditionalGeneration) and not reloaded.training
    assert torch.equal(logits(model, pixels), logits(reloaded, pixels))
    direct = DeepSeekOCRForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(logits(model, pixels), logits(direct, pixels))


def _to_official(state: dict[str, torch.Tensor], config: DeepSeekOCRConfig) -> dict[str, torch.Tensor]:
    """Inverse of the converter, for the tiny model only: exercises the official-folder loader end to end."""
    official = {}
    for key, value in state.items():
        if key.startswith("language_model.") and ".mlp.experts." in key:
            prefix = "model." + key[len("language_model."):].rsplit(".", 1)[0]
            for e in range(value.shape[0]):
                if key.endswith("gate_up_proj"):
                    gate, up = value[e].chunk(2, dim=0)
                    official[f"{prefix}.{e}.gate_proj.weight"] = gate.clone()
                    official[f"{prefix}.{e}.up_proj.weight"] = up.clone()
                else:
                    official[f"{prefix}.{e}.down_proj.weight"] = value[e].clone()
        elif key.startswith("language_model."):
            official["model." + key[len("language_model."):]] = value
        elif key.startswith("vision_encoder.") and ".self_attn.q_proj." in key:
            kind = key.rsplit(".", 1)[1]
            parts = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            official["model." + key[len("vision_encoder."):].replace(f"q_proj.{kind}", f"qkv_proj.{kind}")] = torch.cat(parts)
        elif key.startswith("vision_encoder.") and ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            official["model." + key[len("vision_encoder."):]] = value
        elif key.startswith("projector."):
            official["model.projector.layers." + key.split(".", 1)[1]] = value
        elif key == "view_separator":
            official["model.view_seperator"] = value
        elif key == "image_newline":
            official["model.image_newline"] = value
        else:
            official[key] = value
    return {k: v.contiguous() for k, v in official.items()}


def test_official_folder_sharded_with_index(tmp_path, monkeypatch):
    model = load_model("tiny-random")
    official = _to_official(model.state_dict(), model.config)
    keys = sorted(official)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: official[k] for k in shard_keys}, str(tmp_path / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"model_type": "deepseek_vl_v2", "language_config": {
        k: getattr(model.config, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                                              "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                              "n_routed_experts", "num_experts_per_tok", "n_shared_experts")}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # The official config carries no vision sizes the official code reads; the tiny ones come from the preset.
    monkeypatch.setattr(DeepSeekOCRConfig, "from_official_config", classmethod(
        lambda cls, d, **o: DeepSeekOCRConfig.preset("tiny-random")))
    loaded = load_model(str(tmp_path))
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(model, pixels), logits(loaded, pixels))


def test_hub_id_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="'deepseek-ai/DeepSeek-OCR' is not available offline") as info:
        load_model("deepseek-ai/DeepSeek-OCR")
    assert "\n" not in str(info.value) and "tiny-random" in str(info.value)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="neither a preset"):
        load_model("no such model")
