"""The offline DeepSeek-OCR tokenizer: real BPE ids, DeepSeek-OCR's special ids, one BOS, save/load round trip."""
import json

import pytest
from transformers import AutoTokenizer

import model.tokenizer as tokenizer_module
from model.tokenizer import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    IMAGE_TOKEN_ID,
    PAD_TOKEN_ID,
    SPECIAL_TOKEN_IDS,
    VOCAB_SIZE,
    load_tokenizer,
)

# Ids of the real DeepSeek BPE. The first is the check of shared/reference/offline.md (identical in DeepSeek-OCR's
# own tokenizer). The reference fixture's prompt/target ids (23465, ... and 3164, ...) are NOT these: its README
# says they were chosen by hand because no official tokenizer was available, so they are tested in
# test_processing.py through a stand-in tokenizer instead.
REAL_IDS = {
    "\nConvert the document to markdown. ": [201, 21842, 270, 4940, 304, 2121, 7919, 16, 223],
    "\nSummarize the document.": [201, 101859, 1387, 270, 4940, 16],
    "A short summary.": [35, 3107, 13672, 16],
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def saved_folder(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("text", list(REAL_IDS))
def test_ordinary_text_ids(tokenizer, text):
    assert tokenizer(text, add_special_tokens=False).input_ids == REAL_IDS[text]


def test_bos_added_exactly_once(tokenizer):
    ids = tokenizer("A short summary.").input_ids
    assert ids == [BOS_TOKEN_ID] + REAL_IDS["A short summary."]
    assert tokenizer.add_bos_token and not tokenizer.add_eos_token


def test_core_special_ids(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert len(tokenizer) == VOCAB_SIZE


@pytest.mark.parametrize("text", list(SPECIAL_TOKEN_IDS))
def test_special_string_is_one_token(tokenizer, text):
    token_id = SPECIAL_TOKEN_IDS[text]
    assert tokenizer(text, add_special_tokens=False).input_ids == [token_id]
    assert tokenizer.convert_tokens_to_ids(text) == token_id
    assert tokenizer.decode([token_id]) == text


def test_special_tokens_inside_text(tokenizer):
    ids = tokenizer("<image>\n<|grounding|>Convert", add_special_tokens=False).input_ids
    assert ids[0] == IMAGE_TOKEN_ID and ids[2] == SPECIAL_TOKEN_IDS["<|grounding|>"]


def test_decode_summary_skips_control_tokens(tokenizer):
    ids = [BOS_TOKEN_ID, IMAGE_TOKEN_ID] + REAL_IDS["A short summary."] + [EOS_TOKEN_ID, PAD_TOKEN_ID]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "A short summary."
    # table markup is text, not a control token
    table = tokenizer("<tr><td>1</td></tr>", add_special_tokens=False).input_ids
    assert tokenizer.decode(table + [EOS_TOKEN_ID], skip_special_tokens=True) == "<tr><td>1</td></tr>"


def test_save_pretrained_round_trip(tokenizer, saved_folder):
    reloaded = AutoTokenizer.from_pretrained(saved_folder)
    texts = [*REAL_IDS, *SPECIAL_TOKEN_IDS, "<image>\nSummarize the document."]
    for text in texts:
        assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (0, 1, 2)
    assert reloaded.decode(tokenizer("A short summary.").input_ids, skip_special_tokens=True) == "A short summary."


def test_llama_class_name_in_folder_still_loads_byte_level(saved_folder, tmp_path):
    """The official checkpoint names LlamaTokenizerFast; transformers 5 must still use its byte-level tokenizer.json."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((saved_folder / name).read_bytes())
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(tokenizer_class="LlamaTokenizerFast", add_bos_token=True, add_eos_token=False)
    config_path.write_text(json.dumps(config))
    official_like = load_tokenizer(str(tmp_path))
    text = "\nConvert the document to markdown. "
    assert official_like(text).input_ids == [BOS_TOKEN_ID] + REAL_IDS[text]


def test_presets_and_empty_folders_use_offline_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "build_offline_tokenizer", lambda: "offline")
    assert [load_tokenizer(name) for name in (None, "tiny-random", str(tmp_path))] == ["offline"] * 3
