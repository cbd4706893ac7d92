"""Official DeepSeek-OCR checkpoint -> `DeepseekOCRForConditionalGeneration`, and the `load_model` entry point.

Official key (without the leading "model.")          ->  this model
  embed_tokens / layers.N.* / norm                   ->  language_model.embed_tokens / .layers.N.* / .norm
  layers.N.mlp.experts.E.{gate,up,down}_proj.weight  ->  layers.N.mlp.experts.gate_up_proj[E] (gate rows first,
                                                         then up) / .down_proj[E]
  projector.layers.{weight,bias}                     ->  projector.{weight,bias}
  image_newline, view_seperator (sic)                ->  image_newline, view_separator
  sam_model.*, vision_model.*                        ->  vision_encoder.* (the vision module's own converter)
  lm_head.weight (no "model." prefix)                ->  lm_head.weight
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from transformers import initialization

from model.configuration import OFFICIAL_HUB_ID, TINY_PRESET, DeepseekOCRConfig
from model.deep_encoder import convert_official_vision_state_dict

_EXPERT_KEY = re.compile(r"^layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_PLAIN_RENAMES = {
    "projector.layers.weight": "projector.weight",
    "projector.layers.bias": "projector.bias",
    "image_newline": "image_newline",
    "view_seperator": "view_separator",
}


def _pack_experts(experts: dict[int, dict[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    packed = {}
    for layer, by_expert in experts.items():
        ids = sorted(by_expert)
        if ids != list(range(len(ids))) or any(len(by_expert[e]) != 3 for e in ids):
            raise ValueError(f"layer {layer}: incomplete routed experts (need gate/up/down for experts 0..n-1)")
        prefix = f"language_model.layers.{layer}.mlp.experts."
        packed[prefix + "gate_up_proj"] = torch.stack(
            [torch.cat([by_expert[e]["gate_proj"], by_expert[e]["up_proj"]], dim=0) for e in ids])
        packed[prefix + "down_proj"] = torch.stack([by_expert[e]["down_proj"] for e in ids])
    return packed


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys to this model's keys; unknown keys are kept as they are, for `check_state_dict`."""
    converted, vision, experts = {}, {}, {}
    for key, value in official.items():
        if key == "lm_head.weight":
            converted[key] = value
            continue
        name = key[len("model."):] if key.startswith("model.") else key
        if match := _EXPERT_KEY.match(name):
            layer, expert, proj = int(match[1]), int(match[2]), match[3]
            experts.setdefault(layer, {}).setdefault(expert, {})[proj] = value
        elif name.startswith(("sam_model.", "vision_model.")):
            vision[name] = value
        elif name in _PLAIN_RENAMES:
            converted[_PLAIN_RENAMES[name]] = value
        elif name.startswith(("embed_tokens.", "layers.", "norm.")):
            converted["language_model." + name] = value
        else:
            converted[key] = value
    converted.update(_pack_experts(experts))
    converted.update({"vision_encoder." + k: v for k, v in convert_official_vision_state_dict(vision).items()})
    return converted


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise one error listing every missing key, unexpected key and shape mismatch."""
    expected = model.state_dict()
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


def load_official_state_dict(model: torch.nn.Module, official: dict[str, torch.Tensor]) -> None:
    """Convert, check strictly and copy official weights into `model` (cast to the model's dtypes)."""
    state = convert_official_state_dict(official)
    check_state_dict(model, state)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)


def _read_official_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else None
    files = [folder / f for f in files] if files else sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as err:  # offline, unknown repo, missing auth: one clear line instead of a traceback
        raise RuntimeError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}); "
            "pass a local folder holding its config.json and *.safetensors"
        ) from None
    return Path(path)


@contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_empty_model(config: DeepseekOCRConfig, dtype: torch.dtype):
    from model.modeling import DeepseekOCRForConditionalGeneration

    # Built directly in the target dtype without random init: every parameter is overwritten by the checkpoint.
    with initialization.no_init_weights(), _default_dtype(dtype):
        return DeepseekOCRForConditionalGeneration(config)


def load_official_folder(folder, dtype=torch.float32, attn_implementation="sdpa", experts_implementation=None):
    """A folder with an official config.json and *.safetensors (sharded with its index, or not)."""
    folder = Path(folder)
    config = DeepseekOCRConfig.from_official_config(json.loads((folder / "config.json").read_text()))
    config._attn_implementation = attn_implementation
    config._experts_implementation = experts_implementation
    model = build_empty_model(config, dtype)
    load_official_state_dict(model, _read_official_folder(folder))
    return model


def load_model(name_or_path: str, device=None, dtype: Optional[torch.dtype] = None, attn_implementation: str = "sdpa",
               experts_implementation: Optional[str] = None):
    """One entry point: "tiny-random" (seeded random init), a folder saved by this project's `save_pretrained`,
    a folder with the official checkpoint, or the hub id "deepseek-ai/DeepSeek-OCR". Returns the model in eval mode.

    experts_implementation: "eager", "grouped_mm" or "batched_mm"; None takes transformers' default (grouped_mm)."""
    from model.modeling import DeepseekOCRForConditionalGeneration

    dtype = dtype or torch.float32
    path = Path(name_or_path)
    if name_or_path == TINY_PRESET:
        config = DeepseekOCRConfig.preset(TINY_PRESET)
        config._attn_implementation = attn_implementation
        config._experts_implementation = experts_implementation
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same tiny model in every process
            model = DeepseekOCRForConditionalGeneration(config).to(dtype)
    elif path.is_dir() and _is_native(path):
        model = DeepseekOCRForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, experts_implementation=experts_implementation)
    elif path.is_dir():
        model = load_official_folder(path, dtype, attn_implementation, experts_implementation)
    elif name_or_path == OFFICIAL_HUB_ID or re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path):
        model = load_official_folder(_download(name_or_path), dtype, attn_implementation, experts_implementation)
    else:
        raise FileNotFoundError(f"{name_or_path!r} is neither a preset ({TINY_PRESET!r}), a folder, nor a hub id")
    if device is not None:
        model = model.to(device)
    return model.eval()


def _is_native(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{folder} has no config.json")
    return json.loads(config.read_text()).get("model_type") == DeepseekOCRConfig.model_type
