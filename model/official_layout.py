"""The official DeepSeek-OCR checkpoint layout: the one table of its names, read both ways (official -> this model
when the DeepSeek-OCR backbone loads an official folder, this model -> official when `model.checkpoint.export`
writes one), and the conversion of its weights.

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

import json
import re
from pathlib import Path
from typing import Callable, Optional

import torch
from transformers import initialization
from transformers.modeling_utils import local_torch_dtype

from model.configuration import DeepSeekOCRConfig
from model.deep_encoder import convert_official_vision_state_dict

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


def _pack_experts(experts: dict[int, dict[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    packed = {}
    for layer, by_expert in experts.items():
        ids = sorted(by_expert)
        if ids != list(range(len(ids))) or any(len(by_expert[e]) != len(EXPERT_PROJS) for e in ids):
            raise ValueError(f"layer {layer}: incomplete routed experts (need gate/up/down for experts 0..n-1)")
        packed[packed_expert_key(layer, "gate_up_proj")] = torch.stack(
            [torch.cat([by_expert[e]["gate_proj"], by_expert[e]["up_proj"]], dim=0) for e in ids])
        packed[packed_expert_key(layer, "down_proj")] = torch.stack([by_expert[e]["down_proj"] for e in ids])
    return packed


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys to this model's keys; unknown keys are kept as they are, for `check_state_dict`."""
    converted, vision, experts = {}, {}, {}
    for key, value in official.items():
        if key in UNPREFIXED_KEYS:
            converted[key] = value
            continue
        name = key[len(OFFICIAL_PREFIX):] if key.startswith(OFFICIAL_PREFIX) else key
        if match := EXPERT_KEY.match(name):
            layer, expert, proj = int(match[1]), int(match[2]), match[3]
            experts.setdefault(layer, {}).setdefault(expert, {})[proj] = value
        elif name.startswith(VISION_PARTS):
            vision[name] = value
        elif name in PLAIN_RENAMES:
            converted[PLAIN_RENAMES[name]] = value
        elif name.startswith(DECODER_PARTS):
            converted[DECODER_PREFIX + name] = value
        else:
            converted[key] = value
    converted.update(_pack_experts(experts))
    converted.update({VISION_PREFIX + k: v for k, v in convert_official_vision_state_dict(vision).items()})
    return converted


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], vision_only: bool = False) -> None:
    """Raise one error listing every missing key, unexpected key and shape mismatch (`vision_only`: of the vision
    parts alone)."""
    expected = {k: v for k, v in model.state_dict().items() if not vision_only or k.startswith(VISION_MODULES)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            "checkpoint does not match the model:\n"
            f"missing ({len(missing)}): {missing}\nunexpected ({len(unexpected)}): {unexpected}\n"
            f"shape mismatches ({len(shapes)}): {shapes}"
        )


def load_official_state_dict(model: torch.nn.Module, official: dict[str, torch.Tensor],
                             vision_only: bool = False) -> None:
    """Convert, check strictly and copy official weights into `model` (cast to the model's dtypes); `vision_only`:
    the vision parts alone, for a model whose decoder runs elsewhere (the llama.cpp engine)."""
    state = convert_official_state_dict(official)
    check_state_dict(model, state, vision_only)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=not vision_only)


def is_official_vision_key(key: str) -> bool:
    name = key.removeprefix(OFFICIAL_PREFIX)
    return name.startswith(VISION_PARTS) or name in PLAIN_RENAMES


def read_safetensors_folder(folder: Path, keep: Optional[Callable[[str], bool]] = None) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors files, or those whose name `keep` accepts (the others are never read
    into memory)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else None
    files = [folder / f for f in files] if files else sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            state.update({key: tensors.get_tensor(key) for key in tensors.keys() if keep is None or keep(key)})
    return state


def build_empty_model(config: DeepSeekOCRConfig, dtype: torch.dtype):
    from model.modeling import DeepSeekOCRForConditionalGeneration

    # Built directly in the target dtype without random init: every parameter is overwritten by the checkpoint.
    with initialization.no_init_weights(), local_torch_dtype(dtype):
        return DeepSeekOCRForConditionalGeneration(config)
