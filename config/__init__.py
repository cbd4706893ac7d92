"""Shared configuration: the lowest layer, imported by data, model, training, evaluation and inference."""
from config.loading import ConfigError, apply_overrides, from_dict, load_json, save_json, to_dict
from config.settings import (
    RESOLUTION_MODES,
    TILE_SIZE,
    GenerationSettings,
    LoraConfig,
    OptimizerConfig,
    RenderConfig,
    ResolutionMode,
    TrainingConfig,
    vision_tokens_per_view,
)

__all__ = [
    "ConfigError", "apply_overrides", "from_dict", "load_json", "save_json", "to_dict",
    "RESOLUTION_MODES", "TILE_SIZE", "GenerationSettings", "LoraConfig", "OptimizerConfig", "RenderConfig",
    "ResolutionMode", "TrainingConfig", "vision_tokens_per_view",
]
