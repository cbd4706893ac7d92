"""The collator: exact label masking, truncation that spares the placeholders, multi-page documents, page keys."""
import json
from pathlib import Path

import pytest
import torch

from config import RenderConfig
from model.image_processing import DeepSeekOCRImageProcessor
from model.processing import IGNORE_INDEX, DeepSeekOCRProcessor
from model.tokenizer import IMAGE_TOKEN_ID, load_tokenizer
from training.collator import DeepSeekOCRCollator

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "scitldr-a" / "train.jsonl"
TINY_PLACEHOLDERS = 73  # one 512x512 view: 8 * (8 + 1) + 1


def bundled_records(n: int) -> list[dict]:
    """The first `n` SciTLDR-A training examples as trainer records."""
    records = []
    with BUNDLED.open(encoding="utf-8") as lines:
        for index, line in zip(range(n), lines):
            row = json.loads(line)
            records.append({"id": row["paper_id"], "text": " ".join(row["source"]), "summary": row["target"][0],
                            "references": row["target"]})
    return records


@pytest.fixture(scope="module")
def processor():
    return DeepSeekOCRProcessor(load_tokenizer(None), DeepSeekOCRImageProcessor.from_mode("tiny"), "Summarize.")


def make_collator(processor, max_length=512, **kwargs):
    return DeepSeekOCRCollator(processor, RenderConfig(mode="tiny"), max_length, **kwargs)


def test_labels_fall_on_summary_and_eos_only(processor):
    records = bundled_records(2)
    batch = make_collator(processor)(records)
    tokenizer = processor.tokenizer
    instruction = tokenizer.encode("\nSummarize.", add_special_tokens=False)
    prompt_len = 1 + TINY_PLACEHOLDERS + len(instruction)
    for row, record in enumerate(records):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        summary = tokenizer.encode(record["summary"].strip(), add_special_tokens=False) + [tokenizer.eos_token_id]
        assert ids[0] == tokenizer.bos_token_id
        assert ids[1:1 + TINY_PLACEHOLDERS] == [IMAGE_TOKEN_ID] * TINY_PLACEHOLDERS
        assert ids[1 + TINY_PLACEHOLDERS:prompt_len] == instruction
        end = prompt_len + len(summary)
        assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len  # BOS, placeholders, instruction
        assert labels[prompt_len:end] == summary == ids[prompt_len:end]
        assert labels[end:] == [IGNORE_INDEX] * (len(labels) - end)  # padding
        assert batch["attention_mask"][row].sum() == end
    assert not batch["target_truncated"].any()


def test_truncation_shortens_the_summary_and_is_counted(processor):
    processor.truncated_targets = 0
    batch = make_collator(processor, max_length=5)(bundled_records(2))
    assert batch["target_truncated"].tolist() == [True, True]
    assert processor.truncated_targets == 2
    for row in range(2):
        labels = batch["labels"][row]
        assert int((labels != IGNORE_INDEX).sum()) == 5  # 4 summary tokens + EOS
        assert labels[labels != IGNORE_INDEX][-1] == processor.tokenizer.eos_token_id
        assert int((batch["input_ids"][row] == IMAGE_TOKEN_ID).sum()) == TINY_PLACEHOLDERS


def test_long_document_becomes_several_pages(processor):
    long_text = " ".join(record["text"] for record in bundled_records(6))
    batch = make_collator(processor)([{"id": "long", "text": long_text, "summary": "A summary."}])
    pages = int(batch["num_pages"][0])
    assert pages > 1
    assert batch["pixel_values"].shape[0] == pages
    assert int((batch["input_ids"][0] == IMAGE_TOKEN_ID).sum()) == pages * TINY_PLACEHOLDERS


def test_prepared_images_give_the_same_batch_as_rendering(processor, tmp_path):
    from data.text_to_image import TextToImageConverter

    record = bundled_records(1)[0]
    paths = TextToImageConverter(RenderConfig(mode="tiny")).save_pages(
        TextToImageConverter(RenderConfig(mode="tiny")).render(record["text"]), tmp_path, "doc")
    collator = make_collator(processor)
    rendered = collator([record])
    loaded = collator([{**record, "images": [str(p) for p in paths], "render": {"mode": "tiny"}}])
    for key in ("input_ids", "labels", "pixel_values"):
        assert torch.equal(rendered[key], loaded[key])


def test_page_keys_follow_page_content(processor):
    records = bundled_records(2)
    batch = make_collator(processor, with_page_keys=True)([records[0], records[1], records[0]])
    keys = batch["page_keys"]
    assert len(keys) == 3 and keys[0] == keys[2] != keys[1]
    assert "page_keys" not in make_collator(processor)(records)


def test_sequence_length_is_the_length_of_the_built_sequence(processor, tmp_path):
    """The length the trainer checks against the context, without a pixel: rendered, prepared and text input."""
    from data.text_to_image import TextToImageConverter

    converter = TextToImageConverter(RenderConfig(mode="tiny"))
    short, other = bundled_records(2)
    long = {**other, "text": " ".join(record["text"] for record in bundled_records(6))}
    prepared = {**long, "images": [str(p) for p in converter.save_pages(converter.render(long["text"]), tmp_path,
                                                                         "doc")]}
    text_input = DeepSeekOCRProcessor(processor.tokenizer, processor.image_processor, processor.instruction,
                                      input_mode="text", max_source_length=50)
    for collator in (make_collator(processor, max_length=8), make_collator(text_input, max_length=8)):
        for record in (short, long, prepared):
            assert collator.sequence_length(record) == int(collator([record])["attention_mask"].sum())
    assert make_collator(processor).sequence_length(long) > 2 * TINY_PLACEHOLDERS  # several pages counted
