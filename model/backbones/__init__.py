"""The backbones, registered in one place: a new vision-language model of the family is one module and one line
of `BACKBONES` (with its page geometry in config/geometry.py, which data/ counts tokens with). Callers ask the
registry, never which backbone they hold."""
from __future__ import annotations

from typing import Optional

from config.geometry import page_geometry
from model.backbones import deepseek_ocr, deepseek_ocr2
from model.backbones.base import Backbone, Layout

BACKBONES: dict[str, Backbone] = {b.name: b for b in (deepseek_ocr.BACKBONE, deepseek_ocr2.BACKBONE)}
DEFAULT = deepseek_ocr.BACKBONE.name  # of a saved page processor that names none (saved before backbones)


def recognize(config: dict) -> Optional[tuple[Backbone, Layout]]:
    """The backbone and layout of a folder whose config.json is `config` (by its content, never its name)."""
    # Newest first: an official DeepSeek-OCR-2 config.json has DeepSeek-OCR's `language_config` too.
    for backbone in reversed(BACKBONES.values()):
        layout = backbone.recognize(config)
        if layout is not None:
            return backbone, layout
    return None


def named(name: str) -> Backbone:
    page_geometry(name)  # an unknown name: one line
    return BACKBONES[name]


def of_preset(name: str) -> Optional[Backbone]:
    return next((b for b in BACKBONES.values() if name in b.presets), None)


def of_hub_id(hub_id: str) -> Optional[Backbone]:
    """The backbone whose architecture a hub id has, known without the hub (its weights are not)."""
    return next((b for b in BACKBONES.values() if hub_id in b.hub_ids), None)


def of_model(model) -> Backbone:
    """The backbone of a loaded model, by its config's model_type."""
    model_type = model.config.model_type
    return next(b for b in BACKBONES.values() if model_type in b.model_types)


def of_page_processor(data: dict) -> Backbone:
    """The backbone of a saved page processor (`to_dict`; before backbones existed, DeepSeek-OCR's)."""
    return named(data.get("backbone", DEFAULT))


__all__ = ["BACKBONES", "Backbone", "DEFAULT", "Layout", "named", "of_hub_id", "of_model", "of_page_processor",
           "of_preset", "recognize"]
