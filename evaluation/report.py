"""Presenting evaluation results: the console table and the ROUGE-vs-compression plot."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from evaluation.repetition import LOOP_NGRAM

LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L (rougeL)", "rougeLsum": "ROUGE-Lsum"}
PLOTTED = ("rouge1", "rouge2", "rougeLsum")


def _cell(result: dict[str, Any], metric: str) -> str:
    score = f"{result['scores'][metric]:6.2f}"
    interval = result.get("intervals", {}).get(metric)
    return f"{score} [{interval[0]:6.2f}, {interval[1]:6.2f}]" if interval else score


def _repetition_cells(repetition: Optional[dict[str, Any]]) -> tuple[str, str]:
    """Loop share (with the count of looping summaries) and repeated n-gram rate, both in %."""
    if not repetition or repetition["loop_share"] is None:
        return "n/a", "n/a"
    rate = repetition["repeated_ngram_rate"]
    return (f"{100 * repetition['loop_share']:6.2f} ({repetition['looping']})",
            "n/a" if rate is None else f"{100 * rate:6.2f}")


def format_table(systems: dict[str, dict[str, Any]]) -> str:
    """ROUGE F1 x100 with 95% intervals, then the share of summaries that loop and the repeated 4-gram rate
    (evaluation/repetition.py), one column per system (e.g. model and lead-3), side by side."""
    names = list(systems)
    width = max(24, *(len(n) for n in names))
    lines = [f"{'':<18}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for metric, label in LABELS.items():
        lines.append(f"{label:<18}" + "".join(f"{_cell(systems[n], metric):>{width + 2}}" for n in names))
    cells = [_repetition_cells(systems[n].get("repetition")) for n in names]
    for label, column in (("loops % (count)", 0), (f"rep-{LOOP_NGRAM} %", 1)):
        lines.append(f"{label:<18}" + "".join(f"{cell[column]:>{width + 2}}" for cell in cells))
    return "\n".join(lines)


def reading_line(reading: dict[str, Any]) -> str:
    """One line of how the model's documents were read within its context (metrics.json's `reading`)."""
    strategies = ", ".join(f"{name} {count}" for name, count in reading["strategies"].items())
    share = reading["mean_share_read"]
    return (f"reading: {strategies}; mean windows {reading['mean_windows']}, mean share read "
            f"{'n/a' if share is None else share}, truncated {reading['truncated']}")


def length_buckets(lengths: Sequence[float], buckets: int = 5) -> np.ndarray:
    """Bucket index per document: quantiles of document length, fewer buckets when lengths repeat."""
    values = np.asarray(lengths, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def plot_rouge_vs_compression(rows: Sequence[dict[str, Any]], systems: Sequence[str], path: str | os.PathLike,
                              buckets: int = 5) -> Optional[str]:
    """Mean ROUGE per bucket of document length (text tokens) against the bucket's mean compression ratio.

    `rows` are per-example records with `text_tokens`, `compression_ratio` and one score dict per system.
    Without vision tokens the x axis falls back to document length. Returns a note when nothing can be plotted.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    usable = [r for r in rows if r.get("text_tokens") is not None]
    if not usable:
        return "no document lengths, plot skipped"
    with_ratio = all(r.get("compression_ratio") for r in usable)
    bucket = length_buckets([r["text_tokens"] for r in usable], buckets)
    x_key = "compression_ratio" if with_ratio else "text_tokens"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, style in zip(systems, ("-o", "--s", ":^")):  # line style per system, colour per metric
        for metric, colour in zip(PLOTTED, ("tab:blue", "tab:orange", "tab:green")):
            xs, ys = [], []
            for b in np.unique(bucket):
                members = [r for r, k in zip(usable, bucket) if k == b]
                xs.append(np.mean([r[x_key] for r in members]))
                ys.append(np.mean([r[system][metric] for r in members]))
            ax.plot(xs, ys, style, color=colour, label=f"{system} {LABELS[metric]}")
    ax.set_xlabel("compression ratio (text tokens / vision tokens)" if with_ratio else "document length (text tokens)")
    ax.set_ylabel("F1 x 100")
    ax.set_title(f"ROUGE across {len(np.unique(bucket))} buckets of document length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix so matplotlib picks the format
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return None if with_ratio else "not every document has vision tokens: x axis is document length"
