"""The two kinds of model a summarizer folder can hold, behind one `generate(documents, kwargs)` call.

- `OCRBackend`: DeepSeek-OCR (this project's fine-tuned folders, the official checkpoint, presets): page images
  in (or the text itself for a folder trained with text input), through the model's processor, batched with
  left padding.
- `Seq2SeqBackend`: the BART/T5 baseline written by the generic trainer: source text in.
- `LlamaCppBackend` (inference/llamacpp_engine.py): `OCRBackend`'s inputs and encoder, llama.cpp's decoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image

from config import LoadSettings
from config.modes import vision_tokens
from model.checkpoint.load import load_pretrained


@dataclass
class Document:
    """One input, prepared: its page images (what DeepSeek-OCR reads) and its text where there is one."""

    pages: list[Image.Image] = field(default_factory=list)
    text: Optional[str] = None
    text_tokens: Optional[int] = None  # DeepSeek-OCR tokens of the text; None for images and PDFs


def torch_backend(name: str, load: LoadSettings):
    """(backend, LoadedModel) of a model source on torch."""
    loaded = load_pretrained(name, load)
    if loaded.source.is_deepseek_ocr:
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
        # A model trained on text tokens (input_mode "text", saved with its processor) reads the document's text.
        self.reads_images = processor.input_mode == "pixels"

    def vision_tokens(self, page: Image.Image) -> int:
        """The paper's vision-token count of one page (layout positions not counted), as the processor sees it."""
        images = self.processor.image_processor
        return vision_tokens(images.global_size, images.image_size, images.crop_grid(*page.size))

    def inputs(self, documents: list[Document]) -> dict:
        """The model inputs of a batch, left-padded, on the model's device."""
        batch = self.processor([doc.pages if self.reads_images else doc.text for doc in documents],
                               padding_side="left")
        for key in self._reporting_keys:
            batch.pop(key, None)
        return {key: value.to(self.device) for key, value in batch.items()}

    def generate(self, documents: list[Document], generate_kwargs: dict) -> list[str]:
        batch = self.inputs(documents)
        output = self.model.generate(**batch, **generate_kwargs)
        # Decoder-only: the output repeats the (left-padded) prompt; keep the new tokens.
        return [text.strip() for text in self.processor.batch_decode(output[:, batch["input_ids"].shape[1]:])]


class Seq2SeqBackend:
    reads_images = False
    engine, gguf = "torch", None

    def __init__(self, model, tokenizer, device: torch.device, source_prefix: str = "", max_source_length: int = 1024):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.source_prefix, self.max_source_length = source_prefix, max_source_length

    def generate(self, documents: list[Document], generate_kwargs: dict) -> list[str]:
        texts = [self.source_prefix + doc.text for doc in documents]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_source_length,
                               return_tensors="pt").to(self.device)
        output = self.model.generate(**batch, **generate_kwargs)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
