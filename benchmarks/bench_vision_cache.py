"""Training step time with and without the vision feature cache, for each backbone: its real encoder in front
of its tiny preset's decoder.

The cache replaces the frozen encoder's forward pass by a lookup from the second epoch on, so the gain is the
encoder's share of a step. Each backbone's model has its real encoder (DeepSeek-OCR: SAM + CLIP-L; DeepSeek-OCR-2:
SAM + the Qwen2 encoder) and its preset's few-layer, 64-wide decoder; pages are rendered in each backbone's smallest
mode (512 px for DeepSeek-OCR, 768 px for DeepSeek-OCR-2); float32 on CPU. Each step is forward, backward and an
AdamW step; the figure is the median over the steps, and the ratio is what to compare across machines.

    python -m benchmarks.bench_vision_cache [--quick]
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks.cli import benchmark_main
from config import PAGE_GEOMETRY, RenderConfig
from data.dataset_loader import load_records
from model import backbones
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer
from training.collator import DeepSeekOCRCollator
from training.vision_cache import VisionFeatureCache

def full_encoder_small_decoder(backbone: backbones.Backbone):
    """The backbone's real encoder (its hub architecture's vision config) before its preset's decoder, frozen,
    seeded, in training mode."""
    hub_id, layout = next(iter(backbone.hub_ids.items()))
    tiny = backbone.config("project", None, backbone.presets[0]).to_dict()
    for key in ("projector_input_dim", "model_type", "transformers_version", "architectures"):
        tiny.pop(key, None)  # derived from the vision config, or the class's own
    real = backbone.config(layout, None, hub_id)
    config = type(real)(**{**tiny, "vision_config": real.to_dict()["vision_config"]})
    model = backbone.build(config)
    backbone.freeze_vision(model)
    return model.train()


def make_batch(backbone: backbones.Backbone, mode: str, num_docs: int) -> dict:
    processor = DeepSeekOCRProcessor(load_tokenizer(None), backbone.page_processor(mode))
    records = load_records("bundled", max_samples=num_docs)["train"]
    batch = DeepSeekOCRCollator(processor, RenderConfig(mode=mode), 64, with_page_keys=True)(records)
    for key in REPORTING_KEYS:
        batch.pop(key, None)
    return batch


def time_steps(model, batch: dict, steps: int, cache: VisionFeatureCache | None = None) -> list[float]:
    """Seconds per training step (forward, backward, AdamW), features from `cache` when given."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs = {k: v for k, v in batch.items() if k != "page_keys"}
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step_inputs = cache.model_inputs(model, batch) if cache is not None else dict(inputs)
        model(**step_inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def run(quick: bool = False) -> list[dict]:
    steps, docs = (3, 1) if quick else (6, 2)
    rows = []
    for name, backbone in backbones.BACKBONES.items():
        mode = next(iter(PAGE_GEOMETRY[name].views))  # the smallest render mode it reads
        model, batch = full_encoder_small_decoder(backbone), make_batch(backbone, mode, docs)
        uncached = time_steps(model, batch, steps)
        cache = VisionFeatureCache(model)
        first_epoch = time_steps(model, batch, 1, cache)[0]  # fills the cache
        cached = time_steps(model, batch, steps, cache)
        base, fast = statistics.median(uncached), statistics.median(cached)
        row = {"backbone": name, "mode": mode, "docs_per_step": docs}
        rows += [{**row, "setting": "no cache", "median_step_s": round(base, 3)},
                 {**row, "setting": "cache, first epoch (fill)", "median_step_s": round(first_epoch, 3)},
                 {**row, "setting": "cache, later epochs", "median_step_s": round(fast, 3),
                  "speedup": round(base / fast, 2)}]
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "fewer steps and one document", argv)


if __name__ == "__main__":
    sys.exit(main())
