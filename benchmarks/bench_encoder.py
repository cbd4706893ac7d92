"""The real-size DeepEncoder (SAM ViT-B + compressor + CLIP-L): seconds per page at 512, 640, 1024 and 1280 px,
against the official remote code's figures on these machines (CPU, float32, 2 threads, one page, median of 3
after a warm-up; `../shared/reference/deepseek-ocr.md`, section 7). Those figures include the projector, one
2048 x 1280 matrix product per token (under 0.1% of the time), which is left out here.

Random weights (the time does not depend on them), PyTorch SDPA attention, no gradients. On CUDA the page runs
in bfloat16 and the official CPU column is only context. --quick: 512 and 1024 px, one timed page each.

    python -m benchmarks.bench_encoder [--quick]
"""
from __future__ import annotations

import sys

import torch

from benchmarks.cli import benchmark_main
from benchmarks.timing import median_seconds

# Official remote code, CPU, float32, 2 threads: seconds per page by side (reference doc, section 7).
OFFICIAL_CPU_SECONDS = {512: 2.19, 640: 2.95, 1024: 10.9, 1280: 19.0}


def run(quick: bool = False) -> list[dict]:
    from model.deep_encoder import DeepEncoder, VisionConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        encoder = DeepEncoder(VisionConfig()).to(dtype).eval()
    sides = (512, 1024) if quick else tuple(OFFICIAL_CPU_SECONDS)
    rows = []
    for side in sides:
        pixels = torch.randn(1, 3, side, side, device=device, dtype=dtype,
                             generator=torch.Generator(device=device).manual_seed(side))
        with torch.no_grad():
            seconds = median_seconds(lambda: encoder(pixels), device, 1 if quick else 3)
        official = OFFICIAL_CPU_SECONDS[side]
        rows.append({"bench": "encoder", "device": device.type, "threads": torch.get_num_threads(), "side": side,
                     "seconds_per_page": round(seconds, 2), "official_cpu_seconds": official,
                     "ratio_to_official": round(seconds / official, 2) if device.type == "cpu" else ""})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    benchmark_main(run, __doc__, "512 and 1024 px only, one timed page each", argv)


if __name__ == "__main__":
    main()
