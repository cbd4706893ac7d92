"""The real-size DeepEncoder (SAM ViT-B + compressor + CLIP-L): seconds per page at 512, 640, 1024 and 1280 px,
against the official remote code's figures on these machines (CPU, float32, 2 threads, one page, median of 3
after a warm-up; `../shared/reference/deepseek-ocr.md`, section 7). Those figures include the projector, one
2048 x 1280 matrix product per token (under 0.1% of the time), which is left out here.

Random weights (the time does not depend on them), PyTorch SDPA attention, no gradients. On a CPU with bf16 matrix
units (AMX or AVX512-BF16) the page is also timed in bfloat16, eager and compiled at 640 and 1024 px: torch.compile
(inductor) with freezing, which prepacks the weights for oneDNN and fuses biases, GELU and the elementwise work into
the matrix products; `compile_seconds` is the first call, paid once per page size and batch size. On CUDA the page
runs in bfloat16 and the official CPU column is only context. --quick: 512 and 1024 px, one timed page each, eager.

    python -m benchmarks.bench_encoder [--quick]
"""
from __future__ import annotations

import sys
import time

import torch

from benchmarks.cli import benchmark_main
from benchmarks.timing import median_seconds, sync

# Official remote code, CPU, float32, 2 threads: seconds per page by side (reference doc, section 7).
OFFICIAL_CPU_SECONDS = {512: 2.19, 640: 2.95, 1024: 10.9, 1280: 19.0}
COMPILED_SIDES = (640, 1024)  # Small and Base pages, the sizes a summarizer serves


def compile_encoder(encoder: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.nn.Module, float]:
    """The encoder compiled for inference on pages like `pixels`, and the seconds its first call took.

    Freezing is what makes inductor pay here: without it the matrix products stay ATen's, and they are the time
    (bf16, 2 threads: x0.95 against eager at 1024 px, x0.54 at 640 px, where the position-table resize is
    recompiled into the graph instead of folded into a constant). Inductor reads the setting when it compiles, at
    the first call (torch.compile's `options` did not pass it on in torch 2.13).
    """
    model = torch.compile(encoder, dynamic=False)
    with torch._inductor.config.patch(freezing=True):
        began = time.perf_counter()
        model(pixels)
        sync(pixels.device)
    return model, time.perf_counter() - began


def time_page(encoder, side: int, dtype: torch.dtype, device: torch.device, repeats: int, compile_: bool) -> dict:
    pixels = torch.randn(1, 3, side, side, device=device, dtype=dtype,
                         generator=torch.Generator(device=device).manual_seed(side))
    model, compile_seconds = encoder, ""
    with torch.no_grad():
        if compile_:
            torch._dynamo.reset()  # one page size per compiled graph: each graph holds its own frozen weights
            model, compile_seconds = compile_encoder(encoder, pixels)
            compile_seconds = round(compile_seconds, 1)
        seconds = median_seconds(lambda: model(pixels), device, repeats)
    official = OFFICIAL_CPU_SECONDS[side]
    row = {"bench": "encoder", "device": device.type, "dtype": str(dtype).removeprefix("torch."),
           "mode": "compiled" if compile_ else "eager", "threads": torch.get_num_threads(), "side": side,
           "seconds_per_page": round(seconds, 2), "compile_seconds": compile_seconds, "official_cpu_seconds": official,
           "ratio_to_official": round(seconds / official, 2) if device.type == "cpu" else ""}
    print(row, file=sys.stderr, flush=True)
    return row


def run(quick: bool = False) -> list[dict]:
    from model.checkpoint.device import cpu_has_bf16
    from model.deep_encoder import DeepEncoder, VisionConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device(device):
        encoder = DeepEncoder(VisionConfig()).eval()
    sides = (512, 1024) if quick else tuple(OFFICIAL_CPU_SECONDS)
    repeats = 1 if quick else 3
    if device.type == "cuda":
        dtypes = (torch.bfloat16,)
    else:
        dtypes = (torch.float32, torch.bfloat16) if cpu_has_bf16() else (torch.float32,)
    rows = []
    for dtype in dtypes:
        encoder.to(dtype)
        rows += [time_page(encoder, side, dtype, device, repeats, compile_=False) for side in sides]
        if device.type == "cpu" and dtype == torch.bfloat16 and not quick:
            rows += [time_page(encoder, side, dtype, device, repeats, compile_=True) for side in COMPILED_SIDES]
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "512 and 1024 px only, one timed page each, eager only", argv)


if __name__ == "__main__":
    sys.exit(main())
