"""Training layer: trainers, the train CLI, arguments and run outputs.

Names are imported on first use, so `import training` (and `python -m training.train --help`) stays light.
"""
from config.lazy import lazy_exports

_EXPORTS = {
    "DeepSeekOCRTrainer": "training.deepseek_trainer",
    "SummarizationTrainer": "training.trainer",
    "TrainingConfig": "config",
    "training_arguments": "training.arguments",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
