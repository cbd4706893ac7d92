"""Inference: `DeepSeekSummarizer`, the infer CLI (`python -m inference.infer`) and the API server.

Names are imported on first use, so `import inference` does not load torch or the model.
"""
from importlib import import_module

_EXPORTS = {
    "DeepSeekSummarizer": "inference.summarizer",
    "SummaryResult": "inference.summarizer",
    "InputError": "inference.inputs",
    "InputTooLarge": "inference.inputs",
    "create_app": "inference.api_server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
