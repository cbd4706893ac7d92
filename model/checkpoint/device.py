"""Device and precision, decided by one rule for training, evaluation and inference.

Precision names: "auto", or one of config's `WeightPrecision` names: "bf16"/"bfloat16", "fp16"/"float16",
"no"/"fp32"/"float32" (or a torch.dtype).

The rule:
- "auto" is bfloat16 on a CUDA device that supports it, float32 elsewhere; except that for inference on a CPU with
  native bf16 matrix instructions (AMX or AVX512-BF16: `cpu_has_bf16`) the DeepEncoder alone runs in bfloat16
  (`resolve_encoder_precision`). A page is large matrix products, which those units run faster than float32;
  decoding is one row at a time, where torch's bf16 kernels (oneDNN's path for a single row) are slower than its
  float32 ones on the same CPU (see benchmarks.bench_cpu_serving, its torch-auto, -float32 and -bf16 paths).
  `--dtype bf16` still makes the whole model bfloat16, for half the memory.
- Training on a CPU stays in float32 (`training=True`): CPU training is for smoke runs and debugging, and float32
  keeps those runs comparable across machines with and without bf16 units; the bf16 gain that matters on a CPU
  is serving.
- Half precision asked for where it does not run falls back to float32 with a warning (the seed's example config
  says "bf16" and must still run on a laptop): bfloat16 on a CPU without bf16 units or in CPU training, float16
  on any CPU (no fast float16 kernels there). bfloat16 on a GPU without it is an error naming fp16 as the
  alternative.
"""
from __future__ import annotations

import functools
import logging
import typing
from typing import Union

import torch

from config.errors import UserError
from config.settings import WeightPrecision

logger = logging.getLogger(__name__)

class DeviceError(UserError, ValueError):
    """A device or precision this machine cannot provide; the message is one line for the user."""


# config's precision names -> torch dtypes: a short name is an alias of torch's own name.
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "no": "float32"}
PRECISIONS: dict[str, torch.dtype] = {name: getattr(torch, _ALIASES.get(name, name))
                                      for name in typing.get_args(WeightPrecision)}


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AMX or AVX512-BF16), by torch's own probes (which
    also ask the OS for AMX state); False on a torch build without them."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe is not None and probe() for probe in probes)


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


def resolve_precision(precision: Union[str, torch.dtype, None], device: Union[torch.device, str],
                      training: bool = False) -> torch.dtype:
    """The compute dtype for a precision setting on `device`, by the rule above; `training` keeps a CPU in
    float32."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        bf16_ok = torch.cuda.is_bf16_supported()
    else:
        bf16_ok = _cpu_serves_bf16(device, training)
    if precision in (None, "auto"):
        return torch.bfloat16 if cuda and bf16_ok else torch.float32
    dtype = precision if isinstance(precision, torch.dtype) else PRECISIONS.get(precision)
    if dtype is None:
        raise DeviceError(f"unknown precision {precision!r}; choose auto or one of {', '.join(PRECISIONS)}")
    if cuda:
        if dtype == torch.bfloat16 and not bf16_ok:
            raise DeviceError("this GPU does not support bfloat16; use fp16 (float16) or auto")
        return dtype
    if dtype == torch.float32 or (dtype == torch.bfloat16 and bf16_ok):
        return dtype
    if dtype == torch.float16:
        why = "float16 has no fast kernels on a CPU"
    elif training and device.type == "cpu":
        why = "training on a CPU runs in float32"
    else:
        why = "bfloat16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16"
    logger.warning("%s asked for on %s: using float32 (%s)", str(dtype).removeprefix("torch."), device.type, why)
    return torch.float32


def resolve_encoder_precision(precision: Union[str, torch.dtype, None], device: Union[torch.device, str],
                              training: bool = False) -> torch.dtype:
    """The DeepEncoder's dtype under the same setting: bfloat16 for "auto" in inference on a CPU with bf16 units
    (the rule above), else the model's `resolve_precision`."""
    if precision in (None, "auto") and _cpu_serves_bf16(torch.device(device), training):
        return torch.bfloat16
    return resolve_precision(precision, device, training)


def _cpu_serves_bf16(device: torch.device, training: bool) -> bool:
    """Whether bfloat16 runs natively here: a CPU with bf16 units, outside training (the rule above)."""
    return device.type == "cpu" and not training and cpu_has_bf16()
