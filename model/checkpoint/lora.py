"""LoRA deltas folded into plain weights, on a state dict: what the trainer's final save and
`model.checkpoint.export` share.

No official counterpart (the official code has no training). The adapters are PEFT's, injected in place by the
trainer: a targeted `X` holds `X.base_layer.weight`, `X.lora_A.<adapter>.weight` [r, in] and
`X.lora_B.<adapter>.weight` [out, r], and its output is base + scaling * B @ A.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from config import UserError

LORA_A_KEY = re.compile(r"^(.+)\.lora_A\.([^.]+)\.weight$")


class LoraMergeError(UserError, ValueError):
    """Adapters that cannot be merged as saved; one line for the user."""


def has_lora_keys(state) -> bool:
    return any(".lora_" in key for key in state)


def merge_lora_state_dict(state: dict[str, torch.Tensor],
                          scalings: dict[tuple[str, str], float]) -> dict[str, torch.Tensor]:
    """The plain state dict: every (module, adapter) of `scalings` added to its base weight (in float32, then
    cast back), every LoRA key dropped. `state` is not changed."""
    merged = {key.replace(".base_layer.", "."): value for key, value in state.items() if ".lora_" not in key}
    for (name, adapter), scaling in scalings.items():
        weight = merged[f"{name}.weight"]
        a, b = state[f"{name}.lora_A.{adapter}.weight"], state[f"{name}.lora_B.{adapter}.weight"]
        merged[f"{name}.weight"] = (weight.float() + scaling * (b.float() @ a.float())).to(weight.dtype)
    return merged


def saved_lora_scalings(state: dict[str, torch.Tensor], folder: Path) -> dict[tuple[str, str], float]:
    """alpha / r for every adapter of a checkpoint written mid-training, alpha read from the run's
    training_config.json (in the checkpoint folder or the run folder above it), r from each adapter's shape."""
    from config import TRAINING_CONFIG_FILE

    for candidate in (folder / TRAINING_CONFIG_FILE, folder.parent / TRAINING_CONFIG_FILE):
        if candidate.is_file():
            alpha = json.loads(candidate.read_text(encoding="utf-8")).get("lora", {}).get("alpha")
            break
    else:
        alpha = None
    if alpha is None:
        raise LoraMergeError(f"{folder} holds unmerged LoRA adapters but no {TRAINING_CONFIG_FILE} (here or one folder "
                         "up) gives their lora.alpha; export the run's final folder instead")
    return {(match[1], match[2]): alpha / value.shape[0]
            for key, value in state.items() if (match := LORA_A_KEY.match(key))}
