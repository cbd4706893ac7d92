"""Generated tokens per second of the tiny-random summarizer: KV cache and batching against one-at-a-time.

Three ways to summarize the same documents (each forced to exactly `max_new_tokens` new tokens, greedy):
one document at a time without the KV cache (every step re-reads the prompt and re-encodes the pages), one at a
time with the cache, and all documents in one batch with the cache (the API server's micro-batching).

    python -m benchmarks.bench_generation [--quick]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cli import benchmark_main
from config import GenerationSettings, LoadSettings, RenderConfig, save_run_settings


def build_tiny_folder(folder: Path, max_new_tokens: int = 8) -> Path:
    """A summarizer folder as training writes it, from the tiny-random preset (render mode "tiny")."""
    from model.checkpoint.convert import load_model
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    load_model("tiny-random").save_pretrained(folder)
    DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode("tiny")).save_pretrained(folder)
    save_run_settings(folder, RenderConfig(mode="tiny", font_size=14),
                      GenerationSettings(max_new_tokens=max_new_tokens, batch_size=32))
    return folder


def documents(count: int) -> list[str]:
    return [f"Report {i}. " + "Harvests rose across the region while prices held steady. " * (4 + 3 * i)
            for i in range(count)]


def run(quick: bool = False) -> list[dict]:
    from inference.summarizer import DeepSeekSummarizer

    count, new_tokens = (4, 8) if quick else (8, 16)
    with tempfile.TemporaryDirectory() as tmp:
        summarizer = DeepSeekSummarizer.from_pretrained(build_tiny_folder(Path(tmp)), LoadSettings(device="cpu"))
    docs = [summarizer.prepare_text(text) for text in documents(count)]
    kwargs = {**GenerationSettings(max_new_tokens=new_tokens).generate_kwargs(), "min_new_tokens": new_tokens}
    summarizer.backend.generate(docs[:1], {**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up

    modes = {
        "one-at-a-time, no KV cache": ([[d] for d in docs], {**kwargs, "use_cache": False}),
        "one-at-a-time, KV cache": ([[d] for d in docs], {**kwargs, "use_cache": True}),
        f"batch of {count}, KV cache": ([docs], {**kwargs, "use_cache": True}),
    }
    rows = []
    for name, (batches, generate_kwargs) in modes.items():
        began = time.perf_counter()
        for batch in batches:
            summarizer.backend.generate(batch, generate_kwargs)
        seconds = time.perf_counter() - began
        tokens = count * new_tokens
        rows.append({"bench": "generation", "mode": name, "documents": count, "new_tokens_each": new_tokens,
                     "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2)})
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = round(row["tokens_per_s"] / base, 2)
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "fewer documents and tokens", argv)


if __name__ == "__main__":
    sys.exit(main())
