"""Device and precision, decided by one rule for training, evaluation and inference.

Precision names: "auto", or one of config's `WeightPrecision` names: "bf16"/"bfloat16", "fp16"/"float16",
"no"/"fp32"/"float32" (or a torch.dtype).
"auto" is bfloat16 on a CUDA device that supports it, float32 everywhere else. Half precision asked for on a
CPU falls back to float32 with a warning (the seed's example config says "bf16" and must still run on a laptop);
bfloat16 on a GPU without it is an error naming fp16 as the alternative.
"""
from __future__ import annotations

import logging
import typing
from typing import Union

import torch

from config.settings import WeightPrecision

logger = logging.getLogger(__name__)

class DeviceError(ValueError):
    """A device or precision this machine cannot provide; the message is one line for the user."""


# config's precision names -> torch dtypes: a short name is an alias of torch's own name.
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "no": "float32"}
PRECISIONS: dict[str, torch.dtype] = {name: getattr(torch, _ALIASES.get(name, name))
                                      for name in typing.get_args(WeightPrecision)}


def resolve_device(device=None) -> torch.device:
    """None or "auto": CUDA if available, else CPU; a named device must exist."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device {device!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but CUDA is not available")
    return device


def resolve_precision(precision: Union[str, torch.dtype, None], device: Union[torch.device, str]) -> torch.dtype:
    """The compute dtype for a precision setting on `device`."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision in (None, "auto"):
        return torch.bfloat16 if bf16_ok else torch.float32
    dtype = precision if isinstance(precision, torch.dtype) else PRECISIONS.get(precision)
    if dtype is None:
        raise DeviceError(f"unknown precision {precision!r}; choose auto or one of {', '.join(PRECISIONS)}")
    if dtype != torch.float32 and not cuda:
        logger.warning("%s asked for on %s: using float32 (half precision needs a CUDA GPU)",
                       str(dtype).removeprefix("torch."), device.type)
        return torch.float32
    if dtype == torch.bfloat16 and not bf16_ok:
        raise DeviceError("this GPU does not support bfloat16; use fp16 (float16) or auto")
    return dtype
