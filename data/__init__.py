"""Data layer: rendering text to page images, loading and preparing datasets, publishing them.

Names are imported on first use so that `from data import TextToImageConverter` (and rendering worker
processes) do not pay for importing `datasets`.
"""
from config.lazy import lazy_exports

_EXPORTS = {
    "TextToImageConverter": "data.text_to_image",
    "RenderedDocument": "data.text_to_image",
    "RenderError": "data.text_to_image",
    "DatasetError": "data.dataset_loader",
    "DatasetLoader": "data.dataset_loader",
    "load_records": "data.dataset_loader",
    "JsonlError": "data.jsonl",
    "read_jsonl": "data.jsonl",
    "iter_jsonl": "data.jsonl",
    "write_jsonl_atomic": "data.jsonl",
    "prepare": "data.prepare_datasets",
    "PrepareResult": "data.prepare_datasets",
    "build_dataset_dict": "data.publish_hf_datasets",
    "publish_dataset": "data.publish_hf_datasets",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
