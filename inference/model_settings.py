"""The settings a model folder carries, read without loading the model (so flags are checked first)."""
from __future__ import annotations

from config import GenerationSettings, RenderConfig, load_run_settings
from model.source import resolve_model_source


def saved_settings(name_or_path: str) -> tuple[RenderConfig, GenerationSettings]:
    """The render and generation settings saved with a model; defaults for presets, hub ids, official folders."""
    source = resolve_model_source(name_or_path)
    return load_run_settings(source.path) if source.path else (RenderConfig(), GenerationSettings())


def saved_generation_settings(name_or_path: str) -> GenerationSettings:
    return saved_settings(name_or_path)[1]
