"""The prompt builder and the processor, checked against the official reference fixture (cases A, B, C).

The fixture's tensors come from the shared `reference_tensors` fixture (tests/model/conftest.py).
"""
import json

import pytest
import torch
from PIL import Image

from model.image_processing import DeepSeekOCRImageProcessor, normalize_pixels, num_image_placeholders
from model.processing import IGNORE_INDEX, REPORTING_KEYS, DeepSeekOCRProcessor, build_prompt_ids
from model.tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, IMAGE_TOKEN_ID, PAD_TOKEN_ID, load_tokenizer

INSTRUCTION = "Summarize the document."
# The fixture's text ids are hand-picked stand-ins (its README, section 6), not the real BPE's ids, so the exact
# comparisons run through a tokenizer that returns them for these two strings, as the fixture's generator did.
FIXTURE_IDS = {"\nSummarize the document.": [201, 23465, 14133, 271, 5540, 16],
               "A short summary.": [35, 3164, 13301, 16]}
REAL_INSTRUCTION_IDS = [201, 101859, 1387, 270, 4940, 16]


class FixtureTokenizer:
    """The real tokenizer, except that it encodes the fixture's two strings to the fixture's chosen ids."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def encode(self, text, add_special_tokens=True):
        if text in FIXTURE_IDS and not add_special_tokens:
            return list(FIXTURE_IDS[text])
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def raw_image(tensors, case):
    return Image.fromarray(tensors[f"{case}_raw_image_rgb_u8"].numpy())


def page(width, height, shade=255):
    return Image.new("RGB", (width, height), (shade, shade, shade))


def tiny(tokenizer, **kwargs):
    return DeepSeekOCRProcessor(tokenizer, DeepSeekOCRImageProcessor.from_mode("tiny"), **kwargs)


# --- the prompt builder -------------------------------------------------------------------------------------


def test_build_prompt_ids_reproduces_case_a(tokenizer, reference_tensors):
    ids = build_prompt_ids(FixtureTokenizer(tokenizer), [73], INSTRUCTION)
    assert ids == reference_tensors["a_input_ids"][0].tolist()


def test_build_prompt_ids_real_tokenizer_layout(tokenizer):
    ids = build_prompt_ids(tokenizer, [73], INSTRUCTION)
    assert ids == [BOS_TOKEN_ID] + [IMAGE_TOKEN_ID] * 73 + REAL_INSTRUCTION_IDS
    assert ids.count(BOS_TOKEN_ID) == 1  # the builder's BOS only: text pieces are encoded without specials


def test_build_prompt_ids_several_pages_back_to_back(tokenizer):
    ids = build_prompt_ids(tokenizer, [3, 2], INSTRUCTION + "  ")  # the official template strips the end
    assert ids == [BOS_TOKEN_ID] + [IMAGE_TOKEN_ID] * 5 + REAL_INSTRUCTION_IDS
    with pytest.raises(ValueError):
        build_prompt_ids(tokenizer, [], INSTRUCTION)


# --- the processor against the fixture ----------------------------------------------------------------------


def test_case_a_generation_inputs(tokenizer, reference_tensors):
    batch = tiny(FixtureTokenizer(tokenizer))([[raw_image(reference_tensors, "a")]])
    assert torch.equal(batch["input_ids"], reference_tensors["a_input_ids"])
    assert torch.equal(batch["attention_mask"], torch.ones(1, 80, dtype=torch.long))
    assert torch.equal(batch["pixel_values"], reference_tensors["a_pixel_values"])
    assert batch["pixel_values_tiles"].shape[0] == 0
    assert torch.equal(batch["images_spatial_crop"], reference_tensors["a_images_spatial_crop"])
    assert batch["num_image_tokens"].tolist() == [int(reference_tensors["a_num_image_tokens"])]
    assert batch["num_pages"].tolist() == [1] and "labels" not in batch


def test_case_c_training_inputs_and_labels(tokenizer, reference_tensors):
    batch = tiny(FixtureTokenizer(tokenizer))([[raw_image(reference_tensors, "a")]], targets=["A short summary."])
    assert torch.equal(batch["input_ids"], reference_tensors["c_input_ids"])
    assert torch.equal(batch["labels"], reference_tensors["c_labels"])
    assert torch.equal(batch["attention_mask"], reference_tensors["c_attention_mask"])
    assert batch["target_truncated"].tolist() == [False]
    model_inputs = set(batch) - set(REPORTING_KEYS)
    assert model_inputs == {"input_ids", "attention_mask", "labels", "pixel_values", "pixel_values_tiles",
                            "images_spatial_crop"}


def test_case_b_gundam_inputs(tokenizer, reference_tensors):
    processor = DeepSeekOCRProcessor(FixtureTokenizer(tokenizer), DeepSeekOCRImageProcessor.from_mode("gundam"))
    batch = processor([[raw_image(reference_tensors, "b")]])
    assert torch.equal(batch["input_ids"], reference_tensors["b_input_ids"])
    assert torch.equal(batch["images_spatial_crop"], reference_tensors["b_images_spatial_crop"])
    assert torch.equal(batch["pixel_values"], normalize_pixels(reference_tensors["b_global_pixel_values_u8"]))
    assert torch.equal(batch["pixel_values_tiles"], normalize_pixels(reference_tensors["b_tile_pixel_values_u8"]))
    assert batch["num_image_tokens"].tolist() == [893]


# --- batching, labels, truncation ----------------------------------------------------------------------------


def test_batch_of_documents_with_different_page_counts(tokenizer):
    processor = tiny(tokenizer)
    documents = [[page(600, 800)], [page(600, 800), page(700, 500, shade=0)]]
    targets = ["A short summary.", "Two pages, one summary that is longer than the first."]
    batch = processor(documents, targets=targets)

    assert batch["num_pages"].tolist() == [1, 2]
    assert batch["num_image_tokens"].tolist() == [73, 146]
    assert batch["pixel_values"].shape == (3, 3, 512, 512)
    assert batch["images_spatial_crop"].tolist() == [[1, 1]] * 3
    assert (batch["input_ids"] == IMAGE_TOKEN_ID).sum(dim=1).tolist() == [73, 146]

    lengths = batch["attention_mask"].sum(dim=1).tolist()
    target_ids = [tokenizer.encode(text, add_special_tokens=False) + [EOS_TOKEN_ID] for text in targets]
    assert lengths == [1 + 73 + 6 + len(target_ids[0]), 1 + 146 + 6 + len(target_ids[1])]
    width = batch["input_ids"].shape[1]
    assert width == max(lengths)
    for row, (length, answer) in enumerate(zip(lengths, target_ids)):
        ids, mask, labels = batch["input_ids"][row], batch["attention_mask"][row], batch["labels"][row]
        # right padding: content first, then pad ids with mask 0 and ignored labels
        assert mask[:length].all() and not mask[length:].any()
        assert (ids[length:] == PAD_TOKEN_ID).all() and (labels[length:] == IGNORE_INDEX).all()
        # only the target and its EOS are learned
        assert labels[labels != IGNORE_INDEX].tolist() == answer
        assert labels[length - len(answer):length].tolist() == ids[length - len(answer):length].tolist()
        assert ids[0] == BOS_TOKEN_ID and (ids == BOS_TOKEN_ID).sum() == 1


def test_generation_batch_is_left_padded(tokenizer):
    batch = tiny(tokenizer)([[page(600, 800)], [page(600, 800), page(600, 800)]])
    assert "labels" not in batch and "target_truncated" not in batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.sum(dim=1).tolist() == [80, 153]
    assert mask[0].tolist() == [0] * 73 + [1] * 80 and (ids[0, :73] == PAD_TOKEN_ID).all()
    assert ids[:, -6:].tolist() == [REAL_INSTRUCTION_IDS] * 2  # every prompt ends where generation starts
    right = tiny(tokenizer)([[page(600, 800)], [page(600, 800), page(600, 800)]], padding_side="right")
    assert right["attention_mask"][0].tolist() == [1] * 80 + [0] * 73


def test_truncation_cuts_only_the_target_and_is_counted(tokenizer):
    processor = tiny(tokenizer)
    long_target = "This summary is far too long for the target budget of five tokens."
    batch = processor([[page(600, 800)], [page(600, 800)]], targets=[long_target, "Short."], max_target_length=5)
    assert batch["target_truncated"].tolist() == [True, False]
    assert processor.truncated_targets == 1
    learned = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert learned == tokenizer.encode(long_target, add_special_tokens=False)[:4] + [EOS_TOKEN_ID]
    assert (batch["input_ids"][0] == IMAGE_TOKEN_ID).sum() == 73  # placeholders untouched
    assert batch["input_ids"][0, 74:80].tolist() == REAL_INSTRUCTION_IDS
    processor([[page(600, 800)]], targets=[long_target], max_target_length=5)
    assert processor.truncated_targets == 2  # a running count over calls


# --- shapes of tiled pages, save/load -------------------------------------------------------------------------


def test_gundam_document_shapes(tokenizer):
    processor = DeepSeekOCRProcessor(tokenizer, DeepSeekOCRImageProcessor.from_mode("gundam"))
    batch = processor([[page(600, 600), page(1280, 1920)]])  # one untiled page, one 2x3-tile page
    assert batch["pixel_values"].shape == (2, 3, 1024, 1024)
    assert batch["pixel_values_tiles"].shape == (6, 3, 640, 640)
    assert batch["images_spatial_crop"].tolist() == [[1, 1], [2, 3]]
    expected = num_image_placeholders(1024, 640) + num_image_placeholders(1024, 640, (2, 3))
    assert expected == 273 + 273 + 21 * 30
    assert batch["num_image_tokens"].tolist() == [expected]
    assert batch["images_spatial_crop"].dtype == torch.long


def test_save_and_load_round_trip(tokenizer, tmp_path):
    processor = DeepSeekOCRProcessor(tokenizer, DeepSeekOCRImageProcessor.from_mode("tiny"),
                                     instruction="Give a one-line summary.")
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["instruction"] == "Give a one-line summary."
    assert config["image_processor"] == processor.image_processor.to_dict()

    reloaded = DeepSeekOCRProcessor.from_pretrained(tmp_path)
    documents, targets = [[page(600, 800, shade=200)]], ["A short summary."]
    before, after = processor(documents, targets=targets), reloaded(documents, targets=targets)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    summary = before["labels"][0][before["labels"][0] != IGNORE_INDEX]
    assert reloaded.decode(summary) == "A short summary."
    assert reloaded.batch_decode(before["input_ids"]) == ["\nGive a one-line summary.A short summary."]


def test_mismatched_targets_are_rejected(tokenizer):
    with pytest.raises(ValueError):
        tiny(tokenizer)([[page(600, 800)]], targets=["a", "b"])


# --- text input: the same prompt with the document's text tokens where the pages would be -----------------


def test_text_input_puts_the_text_tokens_where_the_pages_go(tokenizer, tmp_path):
    processor = tiny(tokenizer, input_mode="text", max_source_length=6)
    short, long = "A cat sat.", "One two three four five six seven eight nine ten eleven twelve."
    batch = processor([short, long], targets=["Cat.", "Numbers."])
    assert not {"pixel_values", "pixel_values_tiles", "images_spatial_crop"} & set(batch)
    assert not (batch["input_ids"] == IMAGE_TOKEN_ID).any()
    short_ids = tokenizer.encode(short, add_special_tokens=False)
    prompt = [BOS_TOKEN_ID, *short_ids, *REAL_INSTRUCTION_IDS]
    assert batch["input_ids"][0][:len(prompt)].tolist() == prompt
    assert batch["input_ids"][1][1:7].tolist() == tokenizer.encode(long, add_special_tokens=False)[:6]
    assert batch["source_truncated"].tolist() == [False, True] and processor.truncated_sources == 1
    assert batch["num_image_tokens"].tolist() == [0, 0] and "source_truncated" in REPORTING_KEYS
    labels = batch["labels"][0]
    assert processor.decode(labels[labels != IGNORE_INDEX]) == "Cat."

    # A document quoting the image tag stays text: no placeholder the model would try to fill with pixels.
    assert not (processor(["See <image> here."])["input_ids"] == IMAGE_TOKEN_ID).any()
    # Generation prompts are left-padded and end with the instruction, as for pages.
    generation = processor([short, long])
    assert generation["input_ids"][:, -len(REAL_INSTRUCTION_IDS):].tolist() == [REAL_INSTRUCTION_IDS] * 2

    processor.save_pretrained(tmp_path)
    reloaded = DeepSeekOCRProcessor.from_pretrained(tmp_path)
    assert (reloaded.input_mode, reloaded.max_source_length) == ("text", 6)


def test_text_prompt_needs_text_and_no_pages(tokenizer):
    with pytest.raises(ValueError):
        build_prompt_ids(tokenizer, [73], INSTRUCTION, text_ids=[5, 6])
    with pytest.raises(ValueError):
        build_prompt_ids(tokenizer, [], INSTRUCTION, text_ids=[])
    with pytest.raises(ValueError):
        tiny(tokenizer, input_mode="text")([""])
    with pytest.raises(ValueError):
        tiny(tokenizer, input_mode="vision")


@pytest.mark.parametrize("instruction", [INSTRUCTION, "Summarize.", "  Résumez ce document.  \n", ""])
def test_data_counts_the_prompt_as_the_processor_builds_it(tokenizer, instruction):
    """data.prepare_datasets counts positions without the model (data/tokens.py): the same number."""
    from data.tokens import prompt_positions

    assert prompt_positions(instruction) == tiny(tokenizer, instruction=instruction).fixed_positions()


def test_sequence_length_is_the_built_sequences_without_a_pixel(tokenizer):
    pages = [page(1280, 1920), page(640, 640), page(300, 200)]
    gundam = DeepSeekOCRProcessor(tokenizer, DeepSeekOCRImageProcessor.from_mode("gundam"))
    for target, limit in (("A short summary.", None), ("A short summary that the limit cuts.", 4)):
        built = int(gundam([pages], [target], max_target_length=limit)["attention_mask"].sum())
        assert gundam.sequence_length([p.size for p in pages], target, limit) == built
        text = tiny(tokenizer, input_mode="text", max_source_length=5)
        built = int(text(["one two three four five six seven"], [target], max_target_length=limit)["attention_mask"]
                    .sum())
        assert text.sequence_length("one two three four five six seven", target, limit) == built
