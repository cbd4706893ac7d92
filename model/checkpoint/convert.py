"""Official DeepSeek-OCR checkpoint -> `DeepSeekOCRForConditionalGeneration`, and the `load_model` entry point.

The key names come from the table in `model.checkpoint.official_keys` (which `model.checkpoint.export` reads the
other way); the vision keys go through the vision module's own converter.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import torch
from transformers import initialization

from model.checkpoint.official_keys import (
    DECODER_PARTS,
    DECODER_PREFIX,
    EXPERT_KEY,
    EXPERT_PROJS,
    OFFICIAL_PREFIX,
    PLAIN_RENAMES,
    UNPREFIXED_KEYS,
    VISION_MODULES,
    VISION_PARTS,
    VISION_PREFIX,
    packed_expert_key,
)
from model.checkpoint.presets import build_tiny_deepseek_ocr
from model.checkpoint.source import ModelSource, ModelSourceError, resolve_model_source, with_weights
from model.configuration import DeepSeekOCRConfig
from model.deep_encoder import convert_official_vision_state_dict


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


@contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_empty_model(config: DeepSeekOCRConfig, dtype: torch.dtype):
    from model.modeling import DeepSeekOCRForConditionalGeneration

    # Built directly in the target dtype without random init: every parameter is overwritten by the checkpoint.
    with initialization.no_init_weights(), _default_dtype(dtype):
        return DeepSeekOCRForConditionalGeneration(config)


def model_config(source: ModelSource | str) -> DeepSeekOCRConfig:
    """The architecture of a DeepSeek-OCR source without reading its weights."""
    source = source if isinstance(source, ModelSource) else resolve_model_source(source)
    if source.kind == "preset" and source.is_deepseek_ocr:
        return DeepSeekOCRConfig.preset(source.name)
    if source.kind == "project":
        return DeepSeekOCRConfig.from_pretrained(source.path)
    if source.kind == "official" and source.path is None:  # the official hub id, not fetched
        return DeepSeekOCRConfig()
    if source.kind == "official":
        return DeepSeekOCRConfig.from_official_config(json.loads((source.path / "config.json").read_text()))
    raise ModelSourceError(f"{source.name} is a seq2seq model, not DeepSeek-OCR")


def load_model(source: ModelSource | str, device=None, dtype: Optional[torch.dtype] = None,
               attn_implementation: str = "sdpa", experts_implementation: Optional[str] = None,
               vision_only: bool = False):
    """The DeepSeek-OCR weights of a source (model/checkpoint/source.py): a preset (seeded random init), a folder
    saved by this project's `save_pretrained`, an official-layout folder, or a hub id. Returns the model in eval
    mode; a source that is not DeepSeek-OCR is a ModelSourceError.

    experts_implementation: "eager", "grouped_mm" or "batched_mm"; None takes transformers' default (grouped_mm)
    for every layout (an official folder included).
    vision_only: the vision parts alone (the DeepEncoder, projector and layout embeddings: about a tenth of the real
    model); of a folder only those are read, and the model has no decoder or lm_head. For an engine that runs the
    decoder itself (inference/llamacpp_engine.py)."""
    from model.modeling import DeepSeekOCRForConditionalGeneration

    dtype = dtype or torch.float32
    source = with_weights(source if isinstance(source, ModelSource) else resolve_model_source(source, weights=True))
    if not source.is_deepseek_ocr:
        raise ModelSourceError(f"{source.name} is a seq2seq model, not DeepSeek-OCR")
    if source.kind == "project":
        model = DeepSeekOCRForConditionalGeneration.from_pretrained(
            source.path, dtype=dtype, attn_implementation=attn_implementation,
            experts_implementation=experts_implementation, **({"num_hidden_layers": 0} if vision_only else {}))
    else:
        config = model_config(source)
        config._attn_implementation = attn_implementation
        config._experts_implementation = experts_implementation
        if source.kind == "preset":  # small: built whole, so its seeded vision weights are the preset's own
            model = build_tiny_deepseek_ocr(config).to(dtype)
        else:
            if vision_only:
                config.num_hidden_layers = 0
            model = build_empty_model(config, dtype)
            keep = is_official_vision_key if vision_only else None
            load_official_state_dict(model, read_safetensors_folder(source.path, keep), vision_only)
    if vision_only:
        drop_decoder(model)
    if device is not None:
        model = model.to(device)
    return model.eval()


def drop_decoder(model) -> None:
    """Drop the decoder and lm_head of a vision-only model (its token embeddings alone are 0.66 GB in bfloat16 at
    real size): the engine that runs the decoder holds its own. Calling the torch decoder afterwards fails at once
    instead of computing with weights that were never loaded."""
    model.language_model = None
    model.lm_head = None
