"""How much generated summaries repeat themselves: the failure DeepSeek-OCR users report most (a decoder stuck
in a loop, "Gavin Gavin Gavin ...").

Two measures over word n-grams (lower-cased `\\w+` words), both 0 for text with fewer than n words:
- a summary *loops* when one word n-gram occurs `LOOP_REPEATS` times or more (n = `LOOP_NGRAM`); the share of
  summaries that loop is the "duplicate rate" of the DeepSeek-OCR-2 paper's production figures;
- its repeated n-gram rate is 1 - distinct n-grams / n-grams (rep-n, Welleck et al. 2019), averaged over the
  summaries that have an n-gram.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

LOOP_NGRAM = 4
LOOP_REPEATS = 3
_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int = LOOP_NGRAM) -> list[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def loops(text: str, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether one word n-gram of `text` occurs `repeats` times or more."""
    counts = Counter(ngrams(text, n))
    return bool(counts) and max(counts.values()) >= repeats


def repeated_ngram_rate(text: str, n: int = LOOP_NGRAM) -> float:
    grams = ngrams(text, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repetition_stats(texts: Sequence[str], n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> dict[str, Any]:
    """The share and count of `texts` that loop and their mean repeated n-gram rate, with the definition used."""
    looping = sum(loops(text, n, repeats) for text in texts)
    rates = [repeated_ngram_rate(text, n) for text in texts if ngrams(text, n)]
    return {"looping": looping, "loop_share": round(looping / len(texts), 4) if texts else None,
            "repeated_ngram_rate": round(sum(rates) / len(rates), 4) if rates else None,
            "definition": f"loops: a word {n}-gram occurs {repeats}+ times; repeated_ngram_rate: 1 - distinct "
                          f"{n}-grams / {n}-grams, mean over summaries with one"}
