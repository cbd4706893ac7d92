"""The one table of official DeepSeek-OCR checkpoint names, read both ways: `model.checkpoint.convert` reads official
checkpoints through it (official -> this model) and `model.checkpoint.export` writes them (this model -> official).

Official counterpart: the `state_dict()` of `DeepseekOCRForCausalLM` (`modeling_deepseekocr.py`), as stored in the
`deepseek-ai/DeepSeek-OCR` checkpoint. Official key (after the leading "model.")  ->  this model:
  embed_tokens / layers.N.* / norm                   ->  language_model.embed_tokens / .layers.N.* / .norm
  layers.N.mlp.experts.E.{gate,up,down}_proj.weight  ->  language_model.layers.N.mlp.experts.gate_up_proj[E]
                                                         (gate rows first, then up) / .down_proj[E]
  projector.layers.{weight,bias}                     ->  projector.{weight,bias}
  image_newline, view_seperator (sic)                ->  image_newline, view_separator
  sam_model.*, vision_model.*                        ->  vision_encoder.* (the vision module's own converters)
  lm_head.weight (no "model." prefix)                ->  lm_head.weight
"""
from __future__ import annotations

import re

import torch

OFFICIAL_PREFIX = "model."
UNPREFIXED_KEYS = ("lm_head.weight",)
# Official name (after "model.") -> this model's name, for the parameters renamed one to one.
PLAIN_RENAMES = {
    "projector.layers.weight": "projector.weight",
    "projector.layers.bias": "projector.bias",
    "image_newline": "image_newline",
    "view_seperator": "view_separator",
}
DECODER_PARTS = ("embed_tokens.", "layers.", "norm.")  # official model.X <-> language_model.X
DECODER_PREFIX = "language_model."
VISION_PARTS = ("sam_model.", "vision_model.")  # official model.X <-> vision_encoder.X (after its converters)
VISION_PREFIX = "vision_encoder."
# This model's parameters that turn pages into embeddings: everything but the decoder and lm_head.
VISION_MODULES = (VISION_PREFIX, "projector.", "image_newline", "view_separator")
EXPERT_PROJS = ("gate_proj", "up_proj", "down_proj")
EXPERT_KEY = re.compile(r"^layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
PACKED_EXPERT_KEY = re.compile(rf"^{re.escape(DECODER_PREFIX)}layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")


def expert_key(layer: int, expert: int, proj: str) -> str:
    """The official name (after "model.") of one routed expert's projection."""
    return f"layers.{layer}.mlp.experts.{expert}.{proj}.weight"


def packed_expert_key(layer: int, packed: str) -> str:
    return f"{DECODER_PREFIX}layers.{layer}.mlp.experts.{packed}"


def unpack_experts(layer: int, packed: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One packed tensor ([E, 2I, H] gate_up or [E, H, I] down) -> the official per-expert weights.

    Clones, because safetensors refuses tensors that share storage (all experts are views of one tensor here).
    """
    if packed == "down_proj":
        return {expert_key(layer, e, "down_proj"): value[e].clone() for e in range(value.shape[0])}
    gate, up = value.chunk(2, dim=1)
    out = {}
    for e in range(value.shape[0]):
        out[expert_key(layer, e, "gate_proj")] = gate[e].clone()
        out[expert_key(layer, e, "up_proj")] = up[e].clone()
    return out


def to_official_state_dict(state: dict[str, torch.Tensor], vision_config) -> dict[str, torch.Tensor]:
    """This model's state dict -> the official checkpoint's keys and tensors, the exact inverse of
    `model.checkpoint.convert.convert_official_state_dict`, plus the official keys this model has no use for (CLIP's
    patch-embedding conv, see `model.deep_encoder.to_official_vision_state_dict`).

    A key with no official name is an error: an export must never silently drop a weight.
    """
    from model.deep_encoder import to_official_vision_state_dict

    ours_to_official = {ours: official for official, ours in PLAIN_RENAMES.items()}
    official, vision = {}, {}
    for key, value in state.items():
        if key in UNPREFIXED_KEYS:
            official[key] = value
        elif key in ours_to_official:
            official[OFFICIAL_PREFIX + ours_to_official[key]] = value
        elif match := PACKED_EXPERT_KEY.match(key):
            experts = unpack_experts(int(match[1]), match[2], value)
            official.update({OFFICIAL_PREFIX + name: tensor for name, tensor in experts.items()})
        elif key.startswith(DECODER_PREFIX) and key[len(DECODER_PREFIX):].startswith(DECODER_PARTS):
            official[OFFICIAL_PREFIX + key[len(DECODER_PREFIX):]] = value
        elif key.startswith(VISION_PREFIX):
            vision[key[len(VISION_PREFIX):]] = value
        else:
            raise ValueError(f"no official DeepSeek-OCR name for the weight {key!r}")
    converted = to_official_vision_state_dict(vision, vision_config)
    official.update({OFFICIAL_PREFIX + name: tensor for name, tensor in converted.items()})
    return official
