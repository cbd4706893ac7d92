"""Training step time with and without the vision feature cache: full-size DeepEncoder + a small decoder.

The cache replaces the frozen encoder's forward pass by a lookup from the second epoch on, so the gain is the
encoder's share of a step. The model has the real SAM + CLIP sizes and a 2-layer, 64-wide decoder (as in
`tiny-random`), pages are rendered in tiny mode (512x512); float32 on CPU. Each step is forward, backward and an
AdamW step; the figure is the median over the steps, and the ratio is what to compare across machines.

    python -m benchmarks.bench_vision_cache [--quick]
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks.cli import benchmark_main
from config import RenderConfig
from data.dataset_loader import load_records
from model import backbones
from model.configuration import TINY_PRESET, DeepSeekOCRConfig
from model.image_processing import DeepSeekOCRImageProcessor
from model.modeling import DeepSeekOCRForConditionalGeneration
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer
from training.collator import DeepSeekOCRCollator
from training.vision_cache import VisionFeatureCache


def full_encoder_small_decoder_config() -> DeepSeekOCRConfig:
    """The real VisionConfig (SAM-B + CLIP-L, 2048-wide features) in front of tiny-random's decoder."""
    tiny = DeepSeekOCRConfig.preset(TINY_PRESET).to_dict()
    for key in ("vision_config", "projector_input_dim", "model_type", "transformers_version", "architectures"):
        tiny.pop(key, None)
    return DeepSeekOCRConfig(**{**tiny, "num_hidden_layers": 2})


def build(config: DeepSeekOCRConfig, freeze: bool = True) -> DeepSeekOCRForConditionalGeneration:
    torch.manual_seed(0)
    model = DeepSeekOCRForConditionalGeneration(config)
    if freeze:
        backbones.of_model(model).freeze_vision(model)
    return model.train()


def make_batch(num_docs: int, with_page_keys: bool = False) -> dict:
    processor = DeepSeekOCRProcessor(load_tokenizer(None), DeepSeekOCRImageProcessor.from_mode("tiny"))
    batch = DeepSeekOCRCollator(processor, RenderConfig(mode="tiny"), 64, with_page_keys)(load_records("bundled", max_samples=num_docs)["train"])
    for key in REPORTING_KEYS:
        batch.pop(key)
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
    model = build(full_encoder_small_decoder_config())
    batch = make_batch(docs, with_page_keys=True)
    uncached = time_steps(model, batch, steps)
    cache = VisionFeatureCache(model)
    first_epoch = time_steps(model, batch, 1, cache)[0]  # fills the cache
    cached = time_steps(model, batch, steps, cache)
    base, fast = statistics.median(uncached), statistics.median(cached)
    return [
        {"setting": "no cache", "docs_per_step": docs, "median_step_s": round(base, 3)},
        {"setting": "cache, first epoch (fill)", "docs_per_step": docs, "median_step_s": round(first_epoch, 3)},
        {"setting": "cache, later epochs", "docs_per_step": docs, "median_step_s": round(fast, 3),
         "speedup": round(base / fast, 2)},
    ]


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "fewer steps and one document", argv)


if __name__ == "__main__":
    sys.exit(main())
