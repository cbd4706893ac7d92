"""Training layer: trainers, the train CLI, arguments and run outputs.

Names are imported on first use, so `import training` (and `python -m training.train --help`) stays light.
"""
from importlib import import_module

_EXPORTS = {
    "DeepSeekOCRTrainer": "training.deepseek_trainer",
    "SummarizationTrainer": "training.trainer",
    "TrainingConfig": "config",
    "training_arguments": "training.arguments",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
