"""The settings files a trained summarizer folder carries beside its weights, so inference renders and decodes
exactly as training did. Training writes them; inference and evaluation read them.
"""
from __future__ import annotations

from pathlib import Path

from config.loading import load_json, save_json
from config.settings import GenerationSettings, RenderConfig

RENDER_CONFIG_FILE = "render_config.json"
GENERATION_SETTINGS_FILE = "generation_settings.json"
TRAINING_CONFIG_FILE = "training_config.json"


def save_run_settings(folder: str | Path, render: RenderConfig, generation: GenerationSettings) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_json(render, folder / RENDER_CONFIG_FILE)
    save_json(generation, folder / GENERATION_SETTINGS_FILE)


def load_run_settings(folder: str | Path) -> tuple[RenderConfig, GenerationSettings]:
    """Settings saved with a model; defaults for a folder without them (e.g. the official checkpoint)."""
    folder = Path(folder)
    render = load_json(RenderConfig, folder / RENDER_CONFIG_FILE) if (folder / RENDER_CONFIG_FILE).is_file() \
        else RenderConfig()
    generation = load_json(GenerationSettings, folder / GENERATION_SETTINGS_FILE) \
        if (folder / GENERATION_SETTINGS_FILE).is_file() else GenerationSettings()
    return render, generation
