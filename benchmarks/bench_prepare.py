"""Data preparation: records/s and peak memory with page images, one worker against all cores.

Runs `python -m data.prepare_datasets bundled --generate-images` in a fresh process per setting, on the same
records, and samples the resident memory of the whole process tree (parent and rendering workers).

    python -m benchmarks.bench_prepare [--quick]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.cli import benchmark_main

REPO = Path(__file__).resolve().parents[1]


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(samples: int, workers: int, mode: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "data.prepare_datasets", "bundled", "--generate-images", "--mode", mode,
                   "--max-samples", str(samples), "--workers", str(workers), "--output-dir", out]
        began = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        watched, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, _tree_rss(watched))
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        if child.returncode != 0:
            raise RuntimeError(child.stderr.read().decode()[-500:])
        report = json.loads((Path(out) / "prepare_report.json").read_text())
    records = sum(split.get("written", 0) for split in report["splits"].values()) \
        if isinstance(report.get("splits"), dict) else samples
    return {"workers": workers, "mode": mode, "records": records, "seconds": round(seconds, 1),
            "records_per_s": round(records / seconds, 1), "peak_rss_mib": round(peak / 2**20)}


def run(quick: bool = False) -> list[dict]:
    samples = 100 if quick else 1000  # per split: up to 3 x samples records (the sample has 3,226)
    cores = os.cpu_count() or 1
    rows = [measure(samples, 1, "small"), measure(samples, cores, "small")]
    rows[1]["speedup_vs_1_worker"] = round(rows[1]["records_per_s"] / rows[0]["records_per_s"], 2)
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "100 records per split instead of 1,000", argv)


if __name__ == "__main__":
    sys.exit(main())
