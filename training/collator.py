"""Records -> DeepSeek-OCR training batches: pages (rendered or loaded), prompt with placeholders, masked labels.

The prompt layout and the label masking live in `model.processing.DeepSeekOCRProcessor` (one builder shared with
evaluation and inference); this collator only turns dataset records into the processor's documents and targets,
and adds a content key per page for the vision cache.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from config import RenderConfig
from data.text_to_image import TextToImageConverter
from inference.backends import ContextExceeded
from model.processing import DeepSeekOCRProcessor

logger = logging.getLogger(__name__)


def page_key(global_view: torch.Tensor, tiles: torch.Tensor) -> str:
    """Content key of one page: a hash of exactly the pixels the encoder sees (global view, then its tiles)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (global_view, tiles):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


class DeepSeekOCRCollator:
    """Callable for the DataLoader: a list of records -> processor batch (+ `page_keys` when asked).

    A record's pages are its `images` (paths or PIL images, in order) when it has them, otherwise its `text`
    rendered with `render`; a text-input processor gets the `text` itself. Long texts paginate (the renderer
    never cuts text), so a document becomes several pages; summaries longer than `max_target_length` tokens (EOS
    included) are shortened, never the prompt. With a `context`, a batch holding a longer sequence is refused:
    the trainer leaves such records out beforehand (`sequence_length`, training/context.py).
    """

    def __init__(self, processor: DeepSeekOCRProcessor, render: RenderConfig, max_target_length: int,
                 with_page_keys: bool = False, context: int | None = None):
        self.processor = processor
        self.render = render
        self.max_target_length = max_target_length
        self.with_page_keys = with_page_keys
        self.context = context
        self._converter: TextToImageConverter | None = None  # built on first use (in each DataLoader worker)
        self._warned_modes: set[str] = set()

    @property
    def converter(self) -> TextToImageConverter:
        if self._converter is None:
            self._converter = TextToImageConverter(self.render)
        return self._converter

    def pages(self, record: dict[str, Any]) -> list[Image.Image]:
        images = record.get("images")
        if images:
            self._check_render_mode(record)
            return [image if isinstance(image, Image.Image) else _open_rgb(image) for image in images]
        return self.converter.render(record["text"]).pages

    def page_sizes(self, record: dict[str, Any]) -> list[tuple[int, int]]:
        """(width, height) of each page `pages` gives, read from the image headers or laid out without drawing."""
        images = record.get("images")
        if images:
            return [image.size if isinstance(image, Image.Image) else _image_size(image) for image in images]
        geometry = self.render.geometry
        return [(geometry.page_width, geometry.page_height)] * self.converter.count_pages(record["text"])

    def sequence_length(self, record: dict[str, Any]) -> int:
        """Positions of the record's training sequence, as `__call__` would build it, without reading a pixel."""
        document = record["text"] if self.processor.input_mode == "text" else self.page_sizes(record)
        return self.processor.sequence_length(document, record["summary"], self.max_target_length)

    def _check_render_mode(self, record: dict[str, Any]) -> None:
        # Prepared images rendered in another mode still work, but inference will render in `self.render.mode`.
        mode = (record.get("render") or {}).get("mode")
        if mode and mode != self.render.mode and mode not in self._warned_modes:
            self._warned_modes.add(mode)
            logger.warning("record %s was rendered in mode %r but training uses %r; inference will render in %r",
                           record.get("id"), mode, self.render.mode, self.render.mode)

    def document(self, record: dict[str, Any]) -> list[Image.Image] | str:
        """What the processor reads of a record: its pages, or its text for a text-input model."""
        return record["text"] if self.processor.input_mode == "text" else self.pages(record)

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        documents = [self.document(record) for record in records]
        batch = self.processor(documents, targets=[record["summary"] for record in records],
                               max_target_length=self.max_target_length, padding_side="right")
        batch = dict(batch)
        longest = int(batch["attention_mask"].sum(dim=1).max())
        if self.context is not None and longest > self.context:
            raise ContextExceeded(f"a training sequence of {longest} positions exceeds the decoder's context of "
                                  f"{self.context}: such records are left out before training")
        if self.with_page_keys:
            batch["page_keys"] = [page_key(*view) for view in self.processor.image_processor.page_views(batch)]
        return batch


def _open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _image_size(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size
