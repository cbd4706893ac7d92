"""The one prompt builder and the processor that turns documents (lists of page images) into model inputs.

Prompt layout (the official "plain" template of `infer()`: no role tags, content stripped):

    BOS, <image> x n_1, <image> x n_2, ..., <image> x n_P, tokens of "\\n" + instruction

Each page's `<image>` (id 128815) is expanded to that page's placeholder count (73 for a 512 view, 893 for a
3x2-tile gundam page...); pages follow each other with nothing in between, as the official code does for a
prompt holding several `<image>` tags back to back. Training, evaluation and inference all call
`build_prompt_ids`, so the layout cannot drift between them.

Text input (`input_mode="text"`) is the control that measures what compression costs: the same decoder reads the
document's own text tokens where the placeholders would be, and nothing else in the prompt changes:

    BOS, text tokens of the document (its first max_source_length), tokens of "\\n" + instruction
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence, get_args

import torch
from PIL import Image
from transformers import BatchFeature

from config.settings import InputMode
from data.jsonl import write_json_atomic
from data.tokens import instruction_text
from model import backbones
from model.tokenizer import IMAGE_TOKEN_ID, load_tokenizer

IGNORE_INDEX = -100
DEFAULT_INSTRUCTION = "Summarize the document."
PROCESSOR_CONFIG_NAME = "processor_config.json"
# In a folder of the official layout (`model.checkpoint.export`), processor_config.json holds the official processor's
# settings, which serving engines pass as keyword arguments to their own processor; this project's settings
# live beside it under their own name there.
EXPORTED_PROCESSOR_CONFIG_NAME = "summarizer_processor_config.json"
INPUT_MODES = get_args(InputMode)
# Batch keys for logging and reports, not model inputs: drop them before `model(**batch)`.
REPORTING_KEYS = ("num_pages", "num_image_tokens", "target_truncated", "source_truncated")


def build_prompt_ids(tokenizer, placeholders_per_page: Sequence[int], instruction: str,
                     text_ids: Sequence[int] | None = None) -> list[int]:
    """BOS + the document + the tokens of "\\n" + instruction (right-stripped).

    The document is every page's expanded `<image>` placeholders, or, for text input, `text_ids` (the document's
    own text tokens) in their place; a document is one or the other.
    """
    ids = [tokenizer.bos_token_id]
    if text_ids is not None:
        if placeholders_per_page or not text_ids:
            raise ValueError("a text document needs at least one text token and no pages")
        ids.extend(text_ids)
    elif not placeholders_per_page:
        raise ValueError("a document needs at least one page")
    for count in placeholders_per_page:
        ids.extend([IMAGE_TOKEN_ID] * count)
    text = instruction_text(instruction)
    if text:
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
    return ids


def saved_processor_config(directory: str | Path) -> Path | None:
    """The file holding this project's processor settings in a model folder, or None (official checkpoint,
    preset, or no such folder)."""
    directory = Path(directory)
    for name in (EXPORTED_PROCESSOR_CONFIG_NAME, PROCESSOR_CONFIG_NAME):
        path = directory / name
        # "instruction": transformers' processor_config.json (a DeepSeek-OCR-2 folder's) has an image_processor too.
        if path.is_file() and "instruction" in json.loads(path.read_text(encoding="utf-8")):
            return path
    return None


class DeepSeekOCRProcessor:
    """Documents (lists of page images, or texts with `input_mode="text"`) and optional target summaries ->
    padded model inputs. Pages go through the backbone's page processor (`image_processor`), which also names the
    pages' model inputs.

    Targets longer than `max_target_length` tokens (EOS included) are cut, never the prompt or its image
    placeholders. Each call returns `target_truncated [B]` (reliable inside DataLoader workers) and adds the
    number of cut targets to `self.truncated_targets`, a running count for this process. Text documents longer
    than `max_source_length` tokens keep their beginning, flagged the same way (`source_truncated`,
    `self.truncated_sources`).
    """

    def __init__(self, tokenizer, image_processor,
                 instruction: str = DEFAULT_INSTRUCTION, input_mode: InputMode = "pixels",
                 max_source_length: int | None = None):
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, not {input_mode!r}")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.instruction = instruction
        self.input_mode = input_mode
        self.max_source_length = max_source_length
        self.truncated_targets = 0
        self.truncated_sources = 0

    def __call__(
        self,
        documents: Sequence[Sequence[Image.Image] | str],
        targets: Sequence[str] | None = None,
        max_target_length: int | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> BatchFeature:
        """Model inputs for a batch; padding is left without targets (generation) and right with them (training)."""
        if targets is not None and len(targets) != len(documents):
            raise ValueError(f"{len(documents)} documents but {len(targets)} targets")
        if max_target_length is not None and max_target_length < 1:
            raise ValueError("max_target_length counts the EOS token, so it must be at least 1")
        padding_side = padding_side or ("left" if targets is None else "right")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")

        sequences, label_rows, truncated, sources_cut = [], [], [], []
        pages, num_pages, num_image_tokens = [], [], []
        for index, document in enumerate(documents):
            counts = []
            if self.input_mode == "text":
                text_ids, was_cut = self._source_ids(document)
                sources_cut.append(was_cut)
                prompt = build_prompt_ids(self.tokenizer, counts, self.instruction, text_ids=text_ids)
            else:
                for image in document:
                    page = self.image_processor(image)
                    pages.append(page)
                    counts.append(page.num_placeholders)
                prompt = build_prompt_ids(self.tokenizer, counts, self.instruction)
            num_pages.append(len(counts))
            num_image_tokens.append(sum(counts))
            if targets is None:
                sequences.append(prompt)
                continue
            answer, was_cut = self._target_ids(targets[index], max_target_length)
            sequences.append(prompt + answer)
            label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
            truncated.append(was_cut)

        batch = self._pad(sequences, label_rows if targets is not None else None, padding_side)
        if self.input_mode == "text":
            batch["source_truncated"] = torch.tensor(sources_cut, dtype=torch.bool)
            self.truncated_sources += sum(sources_cut)
        else:
            batch.update(self.image_processor.batch(pages))
        batch["num_pages"] = torch.tensor(num_pages, dtype=torch.long)
        batch["num_image_tokens"] = torch.tensor(num_image_tokens, dtype=torch.long)
        if targets is not None:
            batch["target_truncated"] = torch.tensor(truncated, dtype=torch.bool)
            self.truncated_targets += sum(truncated)
        return BatchFeature(batch)

    def with_mode(self, mode: str) -> "DeepSeekOCRProcessor":
        """This processor reading pages in another resolution mode (same tokenizer, instruction and tiling cap)."""
        images = type(self.image_processor).from_mode(mode, self.image_processor.max_tiles)
        return DeepSeekOCRProcessor(self.tokenizer, images, self.instruction, self.input_mode, self.max_source_length)

    def page_positions(self, page: Image.Image) -> int:
        """Decoder positions of one page's placeholders, from its size alone (no pixel is processed)."""
        return self._size_positions(*page.size)

    def _size_positions(self, width: int, height: int) -> int:
        images = self.image_processor
        return images.num_placeholders(images.crop_grid(width, height))

    def text_ids(self, text: str) -> list[int]:
        """A text document's tokens, whole (what `max_source_length` would cut is the caller's to decide)."""
        return self._text_encoding(text)["input_ids"]

    def text_spans(self, text: str) -> list[tuple[int, int]]:
        """The character spans in `text` of its `text_ids` (long documents plan text windows with them)."""
        start = len(text) - len(text.lstrip())
        return [(begin + start, end + start) for begin, end in self._text_encoding(text)["offset_mapping"]]

    def _text_encoding(self, text: str):
        # verbose=False: no warning that a document is longer than the model reads; windows are planned from it.
        return self.tokenizer(text.strip(), add_special_tokens=False, split_special_tokens=True,
                              return_offsets_mapping=True, verbose=False)

    def fixed_positions(self) -> int:
        """Positions of every prompt besides its document: BOS and the instruction."""
        return len(build_prompt_ids(self.tokenizer, [0], self.instruction))

    def sequence_length(self, document: Sequence[tuple[int, int]] | str, target: str,
                        max_target_length: int | None = None) -> int:
        """Positions of the training sequence `__call__` builds for one document and its target, without reading a
        pixel: `document` is its pages' (width, height), or its text for text input (cut to max_source_length)."""
        if self.input_mode == "text":
            length = len(self._source_ids(document)[0])
        else:
            length = sum(self._size_positions(*size) for size in document)
        return self.fixed_positions() + length + len(self._target_ids(target, max_target_length)[0])

    def _source_ids(self, text: str) -> tuple[list[int], bool]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text input needs each document as a non-empty string")
        # A document that happens to contain "<image>" or "<｜end▁of▁sentence｜>" is text, not control tokens.
        ids = self.text_ids(text)
        cut = self.max_source_length is not None and len(ids) > self.max_source_length
        return (ids[: self.max_source_length] if cut else ids), cut

    def _target_ids(self, target: str, max_target_length: int | None) -> tuple[list[int], bool]:
        ids = self.tokenizer.encode(target.strip(), add_special_tokens=False)
        cut = max_target_length is not None and len(ids) + 1 > max_target_length
        if cut:
            ids = ids[: max_target_length - 1]
        return ids + [self.tokenizer.eos_token_id], cut

    def _pad(self, sequences: list[list[int]], label_rows: list[list[int]] | None, side: str) -> dict:
        length = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id

        def padded(row: list[int], value: int) -> list[int]:
            filler = [value] * (length - len(row))
            return filler + row if side == "left" else row + filler

        batch = {
            "input_ids": torch.tensor([padded(ids, pad_id) for ids in sequences], dtype=torch.long),
            "attention_mask": torch.tensor([padded([1] * len(ids), 0) for ids in sequences], dtype=torch.long),
        }
        if label_rows is not None:
            batch["labels"] = torch.tensor([padded(row, IGNORE_INDEX) for row in label_rows], dtype=torch.long)
        return batch

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str | Path, config_name: str = PROCESSOR_CONFIG_NAME) -> None:
        """Write the processor settings (image settings, instruction, input mode) as `config_name` and the
        tokenizer files into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"image_processor": self.image_processor.to_dict(), "instruction": self.instruction,
                  "input_mode": self.input_mode, "max_source_length": self.max_source_length}
        write_json_atomic(directory / config_name, config)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "DeepSeekOCRProcessor":
        """The processor saved in `directory` by `save_pretrained` (a trained or exported model folder)."""
        directory = Path(directory)
        path = saved_processor_config(directory)
        if path is None:
            raise FileNotFoundError(f"{directory} holds no processor settings of this project")
        config = json.loads(path.read_text(encoding="utf-8"))
        # Folders saved before text input existed read pages.
        images = backbones.of_page_processor(config["image_processor"]).page_processor_from_dict(
            config["image_processor"])
        return cls(load_tokenizer(str(directory)), images,
                   instruction=config["instruction"], input_mode=config.get("input_mode", "pixels"),
                   max_source_length=config.get("max_source_length"))
