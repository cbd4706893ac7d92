"""The one loader: a model name in, everything a caller needs out, the name resolved once.

    loaded = load_pretrained("./deepseek-summarizer", LoadSettings(device="cpu"))
    loaded.model, loaded.processor, loaded.render, loaded.generation, loaded.source.task

Training, the summarizer (and so generation, the infer CLI and the API server) and export all call it. The source
(model/checkpoint/source.py) is classified from its config.json, a hub id after fetching it; device and precision
follow the one rule of model/checkpoint/device.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import torch

from config import TRAINING_CONFIG_FILE, GenerationSettings, LoadSettings, RenderConfig, UserError, first_line
from model.checkpoint.device import resolve_device, resolve_encoder_precision, resolve_precision
from model.checkpoint.source import ModelSource, ModelSourceError, resolve_model_source, with_weights


class ModelLoadError(UserError, RuntimeError):
    """A model or tokenizer that cannot be loaded; the message is one line for the user."""


@dataclass
class LoadedModel:
    source: ModelSource
    model: Any  # in eval mode, on `device`, in `dtype` (its page encoder may be bf16: device.py's rule)
    processor: Any  # DeepSeekOCRProcessor, or the seq2seq model's tokenizer
    render: RenderConfig  # saved with the model: how its training rendered pages
    generation: GenerationSettings  # saved with the model: how it decodes
    device: torch.device
    dtype: torch.dtype
    source_prefix: str = ""  # seq2seq: text put before each document in training ("summarize: " for T5)
    max_source_length: int = 1024  # seq2seq: source tokens it reads (those kept in training, else its limit)


def load_pretrained(name: str | ModelSource, load: Optional[LoadSettings] = None,
                    render_mode: Optional[str] = None, place: bool = True, training: bool = False,
                    vision_only: bool = False) -> LoadedModel:
    """Load any model source with `load`'s device, precision and kernels. `render_mode` is the image mode of a
    processor for a source that saved none (an official checkpoint, a preset): default, the saved render mode.
    `place=False` decides the precision for `load.device` but leaves the weights on the CPU, for a caller that
    places the model itself (the Trainer, one device per process). `training` applies the precision rule's
    training case (float32 on a CPU). `vision_only`: a DeepSeek-OCR model without its decoder, for an engine that
    runs the decoder itself (model/checkpoint/convert.py `load_model`)."""
    load = load or LoadSettings()
    source = name if isinstance(name, ModelSource) else resolve_model_source(str(name), weights=True)
    source = with_weights(source)
    device = resolve_device(load.device)
    dtype = resolve_precision(load.dtype, device, training=training)
    device = device if place else torch.device("cpu")
    render, generation = source.saved_settings()
    if source.has_backbone:
        from model.checkpoint.convert import load_model

        model = load_model(source, device, dtype, load.attn_implementation, load.experts_implementation,
                           vision_only)
        source.backbone.encoder(model).to(resolve_encoder_precision(load.dtype, device, training=training))
        processor = deepseek_ocr_processor(source, render_mode or render.mode)
        return LoadedModel(source, model, processor, render, generation, device, dtype)
    tokenizer, model = load_seq2seq(source, dtype)
    saved = _training_config(source)
    return LoadedModel(source, model.to(device).eval(), tokenizer, render, generation, device, dtype,
                       saved.get("source_prefix") or "", saved.get("max_source_length") or source_length(model,
                                                                                                       tokenizer))


def position_limits(config: Any) -> tuple[Optional[int], Optional[int]]:
    """(encoder, decoder) positions a seq2seq model's position embeddings hold; None for a model without such a
    table (T5's relative positions read any length)."""
    shared = getattr(config, "max_position_embeddings", None)
    return (getattr(config, "max_encoder_position_embeddings", None) or shared,
            getattr(config, "max_decoder_position_embeddings", None) or shared)


def source_length(model: Any, tokenizer: Any) -> int:
    """The source tokens a seq2seq model not trained here reads: its encoder's positions (16,384 for LED), else its
    tokenizer's limit (T5's 512), else 1,024."""
    encoder, _ = position_limits(model.config)
    limit = getattr(tokenizer, "model_max_length", None)
    return encoder or (limit if isinstance(limit, int) and limit < 1_000_000 else 1024)


def deepseek_ocr_processor(source: ModelSource, mode: str):
    """The processor saved with a model; for a source without one, its backbone's page processor of `mode`."""
    from model.processing import DeepSeekOCRProcessor, saved_processor_config
    from model.tokenizer import load_tokenizer

    if source.path is not None and saved_processor_config(source.path) is not None:
        return DeepSeekOCRProcessor.from_pretrained(source.path)
    return DeepSeekOCRProcessor(load_tokenizer(source.path), source.backbone.page_processor(mode))


def load_seq2seq(source: ModelSource, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(tokenizer, model) of a seq2seq source; failures become one `ModelLoadError` line."""
    if source.kind == "preset":
        from model.checkpoint.presets import build_tiny_bart

        tokenizer, model = build_tiny_bart()
        return tokenizer, model.to(dtype)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForSeq2SeqLM.from_pretrained(source.path, dtype=dtype)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load seq2seq model {source.name!r}: {first_line(err)}") from None
    return tokenizer, model


def _training_config(source: ModelSource) -> dict:
    """A seq2seq folder's source prefix and truncation, read leniently as plain JSON (not every training key)."""
    path = source.path / TRAINING_CONFIG_FILE if source.path else None
    return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else {}


__all__ = ["LoadedModel", "ModelLoadError", "ModelSourceError", "deepseek_ocr_processor", "load_pretrained",
           "load_seq2seq", "position_limits", "source_length"]
