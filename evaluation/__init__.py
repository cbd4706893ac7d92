"""Evaluation layer: ROUGE and compression metrics, generation over a dataset, the evaluate CLI and report.

Names are imported on first use so that `from evaluation import evaluate_pairs` (and scoring worker processes)
never pull in torch or transformers.
"""
from importlib import import_module

_EXPORTS = {
    "evaluate_pairs": "evaluation.metrics",
    "lead_n": "evaluation.metrics",
    "sentence_lines": "evaluation.metrics",
    "split_sentences": "evaluation.metrics",
    "bootstrap_intervals": "evaluation.metrics",
    "compression_stats": "evaluation.metrics",
    "length_stats": "evaluation.metrics",
    "ROUGE_TYPES": "evaluation.metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value
