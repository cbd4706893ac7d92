"""The two kinds of model a summarizer folder can hold, behind one `generate(documents, kwargs)` call.

- `OCRBackend`: DeepSeek-OCR (this project's fine-tuned folders, the official checkpoint, presets): page images
  in (or the text itself for a folder trained with text input), through the model's processor, batched with
  left padding.
- `Seq2SeqBackend`: the BART/T5 baseline written by the generic trainer: source text in.
- `LlamaCppBackend` (inference/llamacpp_engine.py): `OCRBackend`'s inputs and encoder, llama.cpp's decoder.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image

from config import LoadSettings, UserError
from inference.loop_guard import guarded
from model.checkpoint.load import load_pretrained


@dataclass
class Document:
    """One input, prepared: its page images (what DeepSeek-OCR reads) and its text where there is one."""

    pages: list[Image.Image] = field(default_factory=list)
    text: Optional[str] = None
    text_tokens: Optional[int] = None  # DeepSeek-OCR tokens of the text; None for images and PDFs
    read_mode: Optional[str] = None  # the resolution mode its pages are read at; None: the model's own


@dataclass
class Budget:
    """The positions one generation call may use: the document's share is `room`."""

    context: int  # the decoder's positions (a seq2seq model: its encoder's)
    new_tokens: int  # max_new_tokens
    fixed: int  # positions of the prompt besides the document (BOS, instruction, a seq2seq prefix)
    room: int  # positions left for the document


class ContextExceeded(RuntimeError):
    """A prompt and its summary longer than the context reached the model: a bug of the planning, never input."""


def torch_backend(name: str, load: LoadSettings):
    """(backend, LoadedModel) of a model source on torch."""
    loaded = load_pretrained(name, load)
    if loaded.source.has_backbone:
        return OCRBackend(loaded.model, loaded.processor, loaded.device), loaded
    return Seq2SeqBackend(loaded.model, loaded.processor, loaded.device, loaded.source_prefix,
                          loaded.max_source_length), loaded


class OCRBackend:
    engine = "torch"  # what runs the decoder, and its GGUF file name where it reads one (the server reports both)
    gguf: Optional[str] = None

    def __init__(self, model, processor, device: torch.device):
        from model.processing import REPORTING_KEYS

        self.model, self.processor, self.device = model, processor, device
        self._reporting_keys = REPORTING_KEYS
        self._mode_processors: dict = {}
        # A model trained on text tokens (input_mode "text", saved with its processor) reads the document's text.
        self.reads_images = processor.input_mode == "pixels"

    @property
    def context(self) -> int:
        return self.model.config.get_text_config().max_position_embeddings

    @property
    def mode(self) -> str:
        """The resolution mode the model reads pages at (a tiled mode is named gundam)."""
        return self.processor.image_processor.mode

    def budget(self, new_tokens: int) -> Budget:
        fixed = self.processor.fixed_positions()
        room = self.context - new_tokens - fixed
        if not self.reads_images and self.processor.max_source_length:
            room = min(room, self.processor.max_source_length)  # the processor would cut the rest
        return Budget(self.context, new_tokens, fixed, room)

    def _processor(self, mode: Optional[str]):
        if mode is None:
            return self.processor
        if mode not in self._mode_processors:
            self._mode_processors[mode] = self.processor.with_mode(mode)
        return self._mode_processors[mode]

    def views(self, mode: str) -> Optional[tuple[int, bool]]:
        """(global view side, whether pages are tiled) of the pages read at `mode`; None for a mode the backbone
        does not read."""
        try:
            images = self._processor(mode).image_processor
        except UserError:
            return None
        return images.global_size, images.crop_mode

    def page_positions(self, page: Image.Image, mode: Optional[str] = None) -> int:
        """Decoder positions of one page read at `mode` (default: the model's own)."""
        return self._processor(mode).page_positions(page)

    def text_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens a text document is read as (a model trained on text input), the whole
        document however long: planning its windows is what this is for."""
        return self.processor.text_spans(text)

    def vision_tokens(self, page: Image.Image, mode: Optional[str] = None) -> int:
        """The paper's vision-token count of one page read at `mode` (default: the model's own; layout positions
        not counted)."""
        return self._processor(mode).image_processor.vision_tokens(*page.size)

    def inputs(self, documents: list[Document]) -> dict:
        """The model inputs of a batch (its documents read at one mode), left-padded, on the model's device."""
        modes = {doc.read_mode for doc in documents}
        if len(modes) > 1:
            raise ValueError(f"a batch reads its pages at one mode, not {sorted(map(str, modes))}")
        batch = self._processor(modes.pop())([doc.pages if self.reads_images else doc.text for doc in documents],
                                             padding_side="left")
        for key in self._reporting_keys:
            batch.pop(key, None)
        return {key: value.to(self.device) for key, value in batch.items()}

    def check_context(self, prompt_lengths: list[int], new_tokens: int) -> None:
        if max(prompt_lengths) + new_tokens > self.context:
            raise ContextExceeded(f"a prompt of {max(prompt_lengths)} positions and {new_tokens} new tokens exceed "
                                  f"the context of {self.context}")

    def generate(self, documents: list[Document], generate_kwargs: dict) -> list[str]:
        batch = self.inputs(documents)
        self.check_context(batch["attention_mask"].sum(dim=1).tolist(), generate_kwargs["max_new_tokens"])
        # The summary's tokens follow the left-padded prompt, whose width is the same in every row.
        output = self.model.generate(**batch, **guarded(generate_kwargs, batch["input_ids"].shape[1]))
        # Decoder-only: the output repeats the (left-padded) prompt; keep the new tokens.
        return [text.strip() for text in self.processor.batch_decode(output[:, batch["input_ids"].shape[1]:])]


class Seq2SeqBackend:
    DECODER_START = 1  # positions of an encoder-decoder's decoder rows before the summary: the start token
    reads_images = False
    engine, gguf = "torch", None

    def __init__(self, model, tokenizer, device: torch.device, source_prefix: str = "", max_source_length: int = 1024):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.source_prefix, self.max_source_length = source_prefix, max_source_length
        self.global_attention = "global_attention_mask" in inspect.signature(model.forward).parameters

    @property
    def context(self) -> int:
        return self.max_source_length

    def budget(self, new_tokens: int) -> Budget:
        # The summary has the decoder's own positions; the source, the prefix and special tokens the encoder's.
        fixed = len(self.tokenizer(self.source_prefix)["input_ids"])
        return Budget(self.max_source_length, new_tokens, fixed, self.max_source_length - fixed)

    def text_spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(span) for span in self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                                       verbose=False)["offset_mapping"]]

    def generate(self, documents: list[Document], generate_kwargs: dict) -> list[str]:
        texts = [self.source_prefix + doc.text for doc in documents]
        batch = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        if max(lengths) > self.max_source_length:
            raise ContextExceeded(f"a source of {max(lengths)} tokens exceeds the {self.max_source_length} the "
                                  "model reads")
        if self.global_attention:
            # LED's encoder attends locally but for the tokens marked global; its summarization checkpoints were
            # trained with the first token global, and without one the summary reads no more than a window.
            batch["global_attention_mask"] = torch.zeros_like(batch["attention_mask"])
            batch["global_attention_mask"][:, 0] = 1
        output = self.model.generate(**batch, **guarded(generate_kwargs, self.DECODER_START))
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
