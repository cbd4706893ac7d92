"""The converter maps the real checkpoint's 2,710 keys onto the real-size model exactly (built on meta, no memory)."""
import json
from pathlib import Path

import pytest
import torch

from model.checkpoint.convert import check_state_dict, convert_official_state_dict
from model.configuration import DeepSeekOCRConfig
from model.modeling import DeepSeekOCRForConditionalGeneration
from model.params import estimate_training_memory, parameter_counts

KEYS = Path(__file__).parents[1] / "fixtures" / "deepseek_ocr_reference" / "real_checkpoint_keys.json"
REAL_TOTAL = 3_336_106_240


@pytest.fixture(scope="module")
def real_model():
    with torch.device("meta"):
        return DeepSeekOCRForConditionalGeneration(DeepSeekOCRConfig.preset("deepseek-ai/DeepSeek-OCR"))


@pytest.fixture(scope="module")
def checkpoint():
    entries = json.loads(KEYS.read_text())["keys"]
    return {e["key"]: torch.empty(e["shape"], device="meta") for e in entries if e["in_real_checkpoint_index"]}


def test_converter_consumes_every_key_and_fills_every_parameter(real_model, checkpoint):
    assert len(checkpoint) == 2710
    converted = convert_official_state_dict(checkpoint)
    check_state_dict(real_model, converted)  # raises listing missing / unexpected / shape mismatches
    assert set(converted) == set(real_model.state_dict())
    # Every official parameter is accounted for: packing and q/k/v splitting only regroup elements.
    dropped = checkpoint["model.vision_model.embeddings.patch_embedding.weight"].numel()
    assert sum(v.numel() for v in converted.values()) == REAL_TOTAL - dropped


def test_converter_rejects_incomplete_checkpoints(real_model, checkpoint):
    partial = dict(checkpoint)
    partial.pop("model.layers.3.self_attn.q_proj.weight")
    partial["model.extra.weight"] = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match=r"missing \(1\).*q_proj.*\n.*unexpected \(1\).*extra"):
        check_state_dict(real_model, convert_official_state_dict(partial))


def test_parameter_counts(real_model, checkpoint):
    counts = parameter_counts(real_model)
    dropped = checkpoint["model.vision_model.embeddings.patch_embedding.weight"].numel()
    # Our model omits only CLIP's unused patch_embedding conv (and the position_ids buffer, not a parameter).
    assert counts["total"] == REAL_TOTAL - dropped
    assert 2.9e9 < counts["decoder_total"] < 2.95e9
    assert 0.56e9 < counts["decoder_active"] < 0.58e9
    print("\nreal-size parameter counts:", counts, "dropped patch_embedding:", dropped)


def test_memory_estimate_on_meta(real_model):
    decoder = parameter_counts(real_model)["decoder_total"]
    full = estimate_training_memory(real_model, torch.bfloat16, trainable=decoder)
    assert full["weights"] > 3.3e9 * 2 and full["optimizer"] > 2.9e9 * 8
    assert full["gradients"] == decoder * 2 and full["optimizer"] == decoder * 8  # bf16 gradients, fp32 moments
    adapters = 12 * 16 * (1280 + 1280)  # r=16 on q_proj: trained in float32 beside frozen bf16 weights
    lora = estimate_training_memory(real_model, torch.bfloat16, trainable=adapters)
    assert lora["weights"] - full["weights"] == (adapters - decoder) * 4  # the float32 master copy, of fewer
