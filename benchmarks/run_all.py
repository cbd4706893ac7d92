"""Run every benchmark and write one Markdown report (tables of each benchmark's rows, with the machine).

    python -m benchmarks.run_all                      # full sizes (tens of minutes on 2 cores)
    python -m benchmarks.run_all --quick              # small sizes (a few minutes)
    python -m benchmarks.run_all --only render,rouge --output /tmp/bench.md

Each benchmark measures the project against a named alternative in the same run and on the same inputs;
compare the ratios, not the absolute times, across machines. The report (benchmarks/results/latest.md by
default) is where the figures live; docs/benchmarks.md links it and copies none of them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.cli import table
from config.cli import Parser

BENCHMARKS = {
    "render": ("Rendering: project renderer vs naive Pillow renderer (pages/s per core)", "benchmarks.bench_render"),
    "prepare": ("Data preparation with page images: all cores vs one worker", "benchmarks.bench_prepare"),
    "vision_cache": ("Frozen-feature cache: training step with vs without (full-size encoder, small decoder)",
                     "benchmarks.bench_vision_cache"),
    "training": ("Training: frozen vs trained encoder, step time and peak memory", "benchmarks.bench_training"),
    "generation": ("Generation: KV cache and batching vs one at a time", "benchmarks.bench_generation"),
    "moe": ("MoE layer (real size): experts implementations eager vs grouped_mm vs batched_mm, forward and backward",
            "benchmarks.bench_moe"),
    "decoder": ("Decoder (real width): generation and training step per experts implementation, fast decode path",
                "benchmarks.bench_decoder"),
    "encoder": ("DeepEncoder (real size): seconds per page against the official code's CPU figures",
                "benchmarks.bench_encoder"),
    "cpu_serving": ("CPU serving (real size, 2 threads): torch float32 / bf16 / compiled, the llamacpp engine at F16 / "
                    "Q8_0 / Q4_K_M, llama.cpp's own tools", "benchmarks.bench_cpu_serving"),
    "long_document": ("A 40-page document end to end (real size, 2 threads): the llamacpp engine on pages at small and "
                      "base mode, on text tokens, and torch", "benchmarks.bench_long_document"),
    "api": ("API: latency and throughput, micro-batching on vs off", "benchmarks.bench_api"),
    "rouge": ("ROUGE scoring: parallel vs serial", "benchmarks.bench_rouge"),
}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


def report(names: list[str], quick: bool) -> str:
    command = "python -m benchmarks.run_all" + (" --quick" if quick else "") + \
        ("" if len(names) == len(BENCHMARKS) else f" --only {','.join(names)}")
    parts = [f"Machine: {machine()}. Reproduce with `{command}`.", ""]
    for name in names:
        title, module = BENCHMARKS[name]
        print(f"[benchmarks] {name} ...", flush=True)
        began = time.perf_counter()
        try:
            rows = importlib.import_module(module).run(quick=quick)
            body = table(rows) if rows else "(no rows)"
        except Exception as err:  # one failing benchmark must not hide the others' figures
            body = f"failed: {type(err).__name__}: {err}"
        parts += [f"**{title}** ({time.perf_counter() - began:.0f} s)", "", body, ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", default="benchmarks/results/latest.md", help="Markdown report path")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    markdown = report(names, args.quick)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(markdown + "\n", encoding="utf-8")
    os.replace(tmp, output)
    print(markdown)
    print(f"[benchmarks] wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
