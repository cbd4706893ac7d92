"""A model source's architecture (`model_config`) and weights (`load_model`), through its backbone.

The backbone (model/backbones) knows its layouts: DeepSeek-OCR's official checkpoint is converted key by key
(model/official_layout.py, whose names `model.checkpoint.export` writes the other way); DeepSeek-OCR-2 loads
through transformers' own class. The conversion functions are named here too, where the parity tests load the
official weights from.
"""
from __future__ import annotations

from typing import Optional

import torch

from model.checkpoint.source import ModelSource, resolve_model_source, with_weights
from model.official_layout import (  # noqa: F401 (the official layout's loaders, as the parity tests import them)
    build_empty_model,
    check_state_dict,
    convert_official_state_dict,
    load_official_state_dict,
)


def model_config(source: ModelSource | str):
    """The architecture of a DeepSeek-OCR source (a transformers config) without reading its weights."""
    source = source if isinstance(source, ModelSource) else resolve_model_source(source)
    return source.backbone.config(source.kind, source.path, source.name)


def load_model(source: ModelSource | str, device=None, dtype: Optional[torch.dtype] = None,
               attn_implementation: str = "sdpa", experts_implementation: Optional[str] = None,
               vision_only: bool = False):
    """The weights of a DeepSeek-OCR source (model/checkpoint/source.py): a preset (seeded random init), a folder
    saved by `save_pretrained`, an official-layout folder, or a hub id. Returns the model in eval mode; a source
    that is not DeepSeek-OCR is a ModelSourceError.

    experts_implementation: "eager", "grouped_mm" or "batched_mm"; None takes transformers' default (grouped_mm)
    for every layout (an official folder included).
    vision_only: the vision parts alone (the encoder, projector and layout embeddings: about a tenth of the real
    model); the model has no decoder or lm_head. For an engine that runs the decoder itself
    (inference/llamacpp_engine.py)."""
    source = with_weights(source if isinstance(source, ModelSource) else resolve_model_source(source, weights=True))
    model = source.backbone.load(source.kind, source.path, source.name, dtype or torch.float32,
                                 attn_implementation, experts_implementation, vision_only)
    return model.to(device) if device is not None else model
