"""ROUGE scoring shared by the trainer's evaluation and the evaluate CLI, plus Lead-N, length, compression and
reading statistics.

`evaluate_pairs` is the one place ROUGE is computed. Settings (exactly what `settings` in its result states):
rouge-score's RougeScorer with `use_stemmer=True`; for ROUGE-Lsum every text is one sentence per line: text that
already has newlines keeps them (CNN/DailyMail highlights), other text is split with pysbd (English, clean=False).
`rougeL` is sentence-level LCS (ignores newlines), `rougeLsum` is summary-level union LCS. With several references,
each metric takes the reference with the best F1 (rouge-score's `score_multi`). Scores are F1 x 100 averaged
over examples, with percentile-bootstrap 95% intervals over examples.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib.metadata import version
from typing import Any, Callable, Optional, Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
PARTS = ("precision", "recall", "fmeasure")
PARALLEL_MIN_EXAMPLES = 1000  # below this, starting worker processes costs more than it saves
_BOOTSTRAP_BLOCK = 1_000_000  # resampled values held in memory at once (x metrics x 8 bytes)


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


class _MemoStemTokenizer:
    """rouge-score's own tokenize() with the same Porter stemmer, memoised per word.

    Stemming is most of the scoring time and words repeat across examples (and rougeLsum tokenizes every text
    twice), so caching stems gives identical tokens several times faster.
    """

    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=1 << 17)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, self)


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    # split_summaries stays False: texts arrive one sentence per line (see `sentence_lines`), so rouge-score's
    # own nltk splitter (which needs punkt data downloaded) is never used.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=_MemoStemTokenizer())


def clear_caches() -> None:
    """Forget memoised stems and sentence splits (benchmarks use it so every timed run starts cold)."""
    _scorer.cache_clear()
    sentence_lines.cache_clear()


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` by pysbd (English, clean=False), stripped, empty ones dropped."""
    if not text.strip():
        return []
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


@functools.lru_cache(maxsize=1 << 16)  # references are split again at every evaluation during training
def sentence_lines(text: str) -> str:
    """`text` as one sentence per line for ROUGE-Lsum: existing newlines are kept, otherwise pysbd splits."""
    if "\n" in text:
        return text
    return "\n".join(split_sentences(text))


def lead_n(text: str, n: int = 3) -> str:
    """The first `n` sentences of `text` (same splitter as scoring), one per line.

    pysbd is slow on long articles, so it segments a growing prefix (doubling it) until the prefix holds more
    than `n` sentences and its first `n` equal those of the previous prefix, or until it is the whole text. One
    prefix is not enough: a cut inside the n-th sentence can make pysbd split that sentence's start (an unclosed
    "(vs." or "i.e."), which looks like n complete sentences followed by more.
    """
    limit, previous = 400 * (n + 1), None
    while True:
        sentences = split_sentences(text[:limit])
        if limit >= len(text) or (len(sentences) > n and sentences[:n] == previous):
            break
        previous = sentences[:n]
        limit *= 2
    # Whitespace inside a sentence (a line break in the source) is collapsed so each sentence stays one line.
    return "\n".join(" ".join(s.split()) for s in sentences[:n])


def _score_one(pair: tuple[str, Sequence[str]]) -> list[list[float]]:
    prediction, references = pair
    best = _scorer().score_multi([sentence_lines(r) for r in references], sentence_lines(prediction))
    return [[getattr(best[t], part) for part in PARTS] for t in ROUGE_TYPES]


def _apply_chunk(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def resolve_workers(workers: Optional[int], n: int) -> int:
    """Processes to use: `None` means every core for large inputs and 1 below PARALLEL_MIN_EXAMPLES."""
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= PARALLEL_MIN_EXAMPLES else 1
    return max(1, min(int(workers), n))


def parallel_map(fn: Callable, items: list, *, workers: Optional[int] = None, progress: Optional[bool] = None,
                 desc: str = "scoring") -> list:
    """`[fn(x) for x in items]`, in worker processes when `resolve_workers` says so; same result either way.

    `fn` must be a module-level function. `progress=None` shows a tqdm bar only when stderr is a terminal.
    """
    from tqdm import tqdm

    workers = resolve_workers(workers, len(items))
    disable = None if progress is None else not progress
    with tqdm(total=len(items), desc=desc, unit="ex", disable=disable, file=sys.stderr) as bar:
        if workers == 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        size = max(8, math.ceil(len(items) / (workers * 8)))  # several chunks per worker balance the load
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        done: list = [None] * len(chunks)
        # "spawn": the trainer calling this may hold CUDA or tokenizer threads that a forked child must not inherit.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_apply_chunk, fn, chunk): index for index, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update(len(chunks[futures[future]]))
        return [result for chunk in done for result in chunk]


def score_examples(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                   workers: Optional[int] = None, progress: Optional[bool] = None) -> np.ndarray:
    """Per-example scores, shape (examples, len(ROUGE_TYPES), len(PARTS)), as fractions (not x100)."""
    rows = parallel_map(_score_one, list(zip(predictions, references)), workers=workers, progress=progress)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(ROUGE_TYPES), len(PARTS))


def bootstrap_intervals(values: np.ndarray, resamples: int = 1000, seed: int = 0,
                        confidence: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval of the mean of each column of `values` (examples x k): shape (k, 2).

    Resampling is done in blocks of rows so memory stays bounded on 10k+ examples; the blocks depend only on
    the number of examples, so a seed gives the same interval every time.
    """
    n, k = values.shape
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, k))
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(means, [tail, 100 - tail], axis=0).T


def rouge_settings(bootstrap: int, seed: int) -> dict[str, Any]:
    """The scoring settings, stated as they are computed (stored in every result)."""
    return {
        "implementation": f"rouge-score {version('rouge-score')} RougeScorer",
        "rouge_types": list(ROUGE_TYPES),
        "rougeL": "sentence-level LCS over the whole text (newlines ignored)",
        "rougeLsum": "summary-level union LCS over newline-separated sentences",
        "use_stemmer": True,
        "tokenizer": "rouge-score default (lowercase, non-alphanumeric to space, Porter stemmer)",
        "sentence_split": f"newlines kept when the text has them; otherwise pysbd {version('pysbd')} "
                          "(language='en', clean=False), one sentence per line",
        "multi_reference": "per metric, the reference with the highest F1 (rouge-score score_multi); "
                           "precision and recall come from that reference",
        "aggregate": "mean over examples of per-example scores, x100",
        "bootstrap": {"method": "percentile, resampling examples", "resamples": bootstrap,
                      "confidence": 0.95, "seed": seed},
    }


def evaluate_pairs(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                   workers: Optional[int] = None, bootstrap: int = 1000, seed: int = 0,
                   with_precision_recall: bool = False, progress: Optional[bool] = False,
                   return_per_example: bool = False) -> dict[str, Any]:
    """ROUGE-1/2/L/Lsum F1 x100 of `predictions` against `references` (a string or a list of them each).

    Returns `scores`, `intervals` (95% bootstrap; omitted when `bootstrap=0`), optionally `precision`/`recall`
    (with their intervals), `counts`, `settings`, and with `return_per_example` the per-example F1 x100.
    """
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(predictions) != len(refs):
        raise ValueError(f"{len(predictions)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError("no examples to score")
    if any(not r for r in refs):
        raise ValueError("every example needs at least one reference")
    per_example = score_examples(predictions, refs, workers=workers, progress=progress)
    parts = {"scores": 2, **({"precision": 0, "recall": 1} if with_precision_recall else {})}
    result: dict[str, Any] = {}
    for key, part in parts.items():
        values = 100 * per_example[:, :, part]
        result[key] = {t: round(float(m), 4) for t, m in zip(ROUGE_TYPES, values.mean(axis=0))}
        if bootstrap:
            bounds = bootstrap_intervals(values, bootstrap, seed)
            name = "intervals" if key == "scores" else f"{key}_intervals"
            result[name] = {t: [round(float(lo), 4), round(float(hi), 4)] for t, (lo, hi) in zip(ROUGE_TYPES, bounds)}
    counts = [len(r) for r in refs]
    result["counts"] = {"examples": len(refs), "empty_predictions": sum(not p.strip() for p in predictions),
                        "references_per_example": {"min": min(counts), "max": max(counts),
                                                   "mean": round(sum(counts) / len(counts), 4)}}
    result["settings"] = rouge_settings(bootstrap, seed)
    if return_per_example:
        result["per_example"] = [{t: round(100 * float(f), 4) for t, f in zip(ROUGE_TYPES, row)}
                                 for row in per_example[:, :, 2]]
    return result


def distribution(values: Sequence[float]) -> Optional[dict[str, float]]:
    """mean, median, p90, min, max and count of `values` (None when empty)."""
    if not len(values):
        return None
    array = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(array.mean()), 4), "median": round(float(np.median(array)), 4),
            "p90": round(float(np.percentile(array, 90)), 4), "min": round(float(array.min()), 4),
            "max": round(float(array.max()), 4), "count": int(array.size)}


def length_stats(texts: Sequence[str], count_tokens: Optional[Callable[[str], int]] = None) -> dict[str, Any]:
    """Word (whitespace) and DeepSeek text-token length distributions of `texts`."""
    if count_tokens is None:
        from data.tokens import count_text_tokens as count_tokens
    return {"words": distribution([len(t.split()) for t in texts]),
            "tokens": distribution([count_tokens(t) for t in texts])}


def compression_stats(text_tokens: Sequence[Optional[int]], vision_tokens: Sequence[Optional[int]],
                      pages: Sequence[Optional[int]]) -> dict[str, Any]:
    """Source text tokens, vision tokens and pages per document, and the compression ratio (text / vision).

    `overall_ratio` is total text tokens over total vision tokens for documents that have both; the
    per-document distribution is given too because long documents dominate the overall figure.
    """
    pairs = [(t, v) for t, v in zip(text_tokens, vision_tokens) if t is not None and v]
    return {
        "text_tokens": distribution([t for t in text_tokens if t is not None]),
        "vision_tokens": distribution([v for v in vision_tokens if v is not None]),
        "pages": distribution([p for p in pages if p is not None]),
        "documents_with_vision_tokens": len(pairs),
        "overall_ratio": round(sum(t for t, _ in pairs) / sum(v for _, v in pairs), 4) if pairs else None,
        "ratio_per_document": distribution([t / v for t, v in pairs]),
    }


def _mean(values: Sequence[Any]) -> Optional[float]:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(sum(numbers) / len(numbers), 4) if numbers else None


def _share_read(prediction: dict[str, Any]) -> Optional[float]:
    """The share of a document its first reading covered: of its pages, or of its text tokens for a reader of
    text (no pages)."""
    pages, tokens = prediction.get("pages"), prediction.get("document_tokens")
    if pages:
        return (prediction.get("pages_read") or 0) / pages
    return (prediction.get("tokens_read") or 0) / tokens if tokens else None


def reading_stats(predictions: Sequence[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """How the documents were read within the decoder's context (inference/long_documents.py), from the fields of
    the prediction lines that record it; None when none does (files written before they were recorded)."""
    read = [p for p in predictions if isinstance(p.get("strategy"), str)]
    if not read:
        return None
    return {"documents": len(read), "strategies": dict(Counter(p["strategy"] for p in read)),
            "mean_windows": _mean([p.get("windows") for p in read]),
            "mean_levels": _mean([p.get("levels") for p in read]),
            "mean_pages": _mean([p.get("pages") for p in read]),
            "mean_pages_read": _mean([p.get("pages_read") for p in read]),
            "mean_share_read": _mean([_share_read(p) for p in read]),
            "truncated": sum(p["strategy"] == "truncate" for p in read),
            "definition": "share read: pages read / pages, or for a model that reads text (pages 0) tokens read / "
                          "document tokens, by the first reading (hierarchical: its windows); truncated: "
                          "documents read only in part (strategy truncate)"}
