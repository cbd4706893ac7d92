"""Inference: `DeepSeekSummarizer`, the infer CLI (`python -m inference.infer`) and the API server.

Names are imported on first use, so `import inference` does not load torch or the model.
"""
from config.lazy import lazy_exports

_EXPORTS = {
    "DeepSeekSummarizer": "inference.summarizer",
    "SummaryResult": "inference.summarizer",
    "InputError": "inference.inputs",
    "InputTooLarge": "inference.inputs",
    "create_app": "inference.api_server",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
