"""Evaluation layer: ROUGE and compression metrics, the evaluate CLI and its report (generation, below it in the
layers, is inference.generate; `python -m evaluation.generate` hands over to it).

Names are imported on first use so that `from evaluation import evaluate_pairs` (and scoring worker processes)
never pull in torch or transformers.
"""
from config.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
