"""ROUGE scoring throughput (examples/s): evaluate_pairs serial against parallel worker processes.

Both score the same pairs, Lead-3 of bundled SciTLDR-A abstracts against their references (2,000 pairs, or 300
with --quick); Lead-3 is computed once beforehand and not timed. Wall-clock time, median of repeats; every repeat
starts with cold caches (the parallel run's fresh workers always do), and the parallel time includes starting
the workers. CPU seconds (this process plus its finished workers) are reported too: on a machine whose cores are
busy with other work, wall-clock speed-up cannot show, but the CPU cost of the parallel path still can.

    python -m benchmarks.bench_rouge [--quick]
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from benchmarks.cli import benchmark_main
from evaluation.metrics import clear_caches, evaluate_pairs, lead_n, parallel_map

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "bundled" / "scitldr-a"


def load_pairs(count: int) -> tuple[list[str], list[list[str]]]:
    """Lead-3 predictions and reference lists for the first `count` bundled records (test, dev, train)."""
    records = [json.loads(line) for split in ("test", "dev", "train")
               for line in (BUNDLED / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    records = records[:count]
    leads = parallel_map(lead_n, [" ".join(r["source"]) for r in records], progress=False,
                         workers=os.cpu_count() if len(records) >= 200 else 1)
    return leads, [r["target"] for r in records]


def _cpu_seconds() -> float:
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _time(predictions: list[str], references: list[list[str]], workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one cold evaluate_pairs call."""
    clear_caches()
    cpu, start = _cpu_seconds(), time.perf_counter()
    evaluate_pairs(predictions, references, workers=workers, bootstrap=1000)
    return time.perf_counter() - start, _cpu_seconds() - cpu


def run(quick: bool = False) -> list[dict]:
    count, repeats = (300, 1) if quick else (2000, 3)
    predictions, references = load_pairs(count)
    cores = os.cpu_count() or 1
    rows = []
    for label, workers in (("serial", 1), (f"parallel ({cores} processes)", cores)):
        times = [_time(predictions, references, workers) for _ in range(repeats)]
        seconds, cpu = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
        rows.append({"mode": label, "workers": workers, "examples": len(predictions), "repeats": repeats,
                     "seconds": round(seconds, 2), "examples_per_s": round(len(predictions) / seconds, 1),
                     "cpu_seconds": round(cpu, 2), "examples_per_cpu_s": round(len(predictions) / cpu, 1),
                     "load_average": round(os.getloadavg()[0], 2)})
    for row in rows:
        row["speedup_vs_serial"] = round(rows[0]["seconds"] / row["seconds"], 2)
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "300 pairs, one repeat", argv)


if __name__ == "__main__":
    sys.exit(main())
