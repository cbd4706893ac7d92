"""Training step time and peak memory: frozen DeepEncoder (this project) vs training the encoder too (naive).

Two models: `tiny-random`, and the full-size DeepEncoder (real SAM + CLIP) with a small decoder. Each setting
runs in its own fresh process, so its peak resident memory (`ru_maxrss`) is its own: weights, gradients, AdamW
state and activations. Steps: forward, backward, AdamW; tiny-mode pages, float32 on CPU; median step time.

    python -m benchmarks.bench_training [--quick]
"""
from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys

from benchmarks.bench_vision_cache import build, full_encoder_small_decoder_config, make_batch, time_steps
from benchmarks.cli import benchmark_main


def _measure(model_name: str, freeze: bool, steps: int, docs: int) -> dict:
    from model.configuration import DeepSeekOCRConfig

    config = full_encoder_small_decoder_config() if model_name == "full encoder" else DeepSeekOCRConfig.preset(model_name)
    model = build(config, freeze=freeze)
    times = time_steps(model, make_batch(docs), steps + 1)[1:]  # the first step pays one-off allocations
    return {
        "model": model_name,
        "encoder": "frozen" if freeze else "trained (naive)",
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "median_step_s": round(statistics.median(times), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run(quick: bool = False) -> list[dict]:
    steps, docs = (2, 1) if quick else (5, 2)
    rows = []
    context = multiprocessing.get_context("spawn")
    for model_name in ("tiny-random", "full encoder"):
        for freeze in (True, False):
            with context.Pool(1) as pool:
                rows.append(pool.apply(_measure, (model_name, freeze, steps, docs)))
        frozen, naive = rows[-2], rows[-1]
        frozen["naive_over_frozen_time"] = round(naive["median_step_s"] / frozen["median_step_s"], 2)
        frozen["naive_over_frozen_rss"] = round(naive["peak_rss_mib"] / frozen["peak_rss_mib"], 2)
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "fewer steps and one document per step", argv)


if __name__ == "__main__":
    sys.exit(main())
