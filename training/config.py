"""The reference layout's import path for the training configuration; the definitions live in `config`."""
from config import LoraConfig, OptimizerConfig, TrainingConfig, load_json

__all__ = ["LoraConfig", "OptimizerConfig", "TrainingConfig", "load_json"]
