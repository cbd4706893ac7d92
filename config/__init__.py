"""Shared configuration: the lowest layer, imported by data, model, training, evaluation and inference."""
from config.artifacts import (
    GENERATION_SETTINGS_FILE,
    RENDER_CONFIG_FILE,
    TRAINING_CONFIG_FILE,
    load_run_settings,
    save_run_settings,
)
from config.errors import USER_ERRORS, UserError, first_line
from config.geometry import DEFAULT_BACKBONE, PAGE_GEOMETRY, BackboneName, PageGeometry, page_geometry
from config.loading import ConfigError, apply_overrides, flat_items, from_dict, load_json, save_json, to_dict
from config.modes import (
    MAX_TILES,
    RESOLUTION_MODES,
    TILE_SIZE,
    ResolutionMode,
    tile_count,
    tile_grid,
    vision_tokens,
    vision_tokens_per_view,
)
from config.settings import (
    EXPERTS_IMPLEMENTATIONS,
    GenerationSettings,
    LoadSettings,
    LoraConfig,
    OptimizerConfig,
    RenderConfig,
    TrainingConfig,
)

__all__ = [
    "GENERATION_SETTINGS_FILE", "RENDER_CONFIG_FILE", "TRAINING_CONFIG_FILE", "load_run_settings", "save_run_settings",
    "USER_ERRORS", "UserError", "first_line",
    "DEFAULT_BACKBONE", "PAGE_GEOMETRY", "BackboneName", "PageGeometry", "page_geometry",
    "ConfigError", "apply_overrides", "flat_items", "from_dict", "load_json", "save_json", "to_dict",
    "MAX_TILES", "RESOLUTION_MODES", "TILE_SIZE", "tile_count", "tile_grid", "vision_tokens",
    "GenerationSettings", "LoraConfig", "OptimizerConfig", "RenderConfig", "ResolutionMode", "TrainingConfig",
    "vision_tokens_per_view", "EXPERTS_IMPLEMENTATIONS", "LoadSettings",
]
