"""Where a model comes from, decided once: every command and loader asks `resolve_model_source`.

    tiny-random                   preset: the real architecture at tiny sizes, seeded random weights
    ./deepseek-summarizer         project folder: written by this project's training (`save_pretrained`)
    ./exported, ./DeepSeek-OCR    official folder: the official checkpoint layout (config.json + safetensors)
    ./baseline-summarizer         seq2seq folder: a BART/T5 baseline trained here (or any encoder-decoder)
    deepseek-ai/DeepSeek-OCR      hub id: downloaded (or read from the local cache; offline, only from it)

A name that looks like a path (it starts with ./, ../, / or ~, or names an existing place) is a path: when it does
not exist, the error says "folder not found", not "cannot download". Nothing heavy is imported here.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from model.configuration import OFFICIAL_HUB_ID, OFFICIAL_MODEL_TYPE, TINY_PRESET, DeepSeekOCRConfig

SourceKind = Literal["preset", "project", "official", "seq2seq", "hub"]
PRESETS = (TINY_PRESET,)
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SEQ2SEQ_TYPES = {"bart", "t5", "mt5", "pegasus", "led", "mbart"}


class ModelSourceError(ValueError):
    """A model name that leads nowhere; the message is one line saying why and what to pass instead."""


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    name: str  # as the user gave it
    path: Optional[Path] = None  # the folder, for every kind but preset and (not yet downloaded) hub

    @property
    def is_deepseek_ocr(self) -> bool:
        """DeepSeek-OCR (any layout) rather than a seq2seq model. Hub ids are judged by name, offline-safe."""
        if self.kind == "hub":
            return "deepseek-ocr" in self.name.lower()
        return self.kind != "seq2seq"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~", ".\\")) or name in (".", "..") or os.sep + os.sep in name \
        or name.count("/") > 1 or name.endswith("/")


def _folder_kind(folder: Path) -> SourceKind:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{folder} is not a model folder: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelSourceError(f"{config_file} is not valid JSON ({err})") from None
    if config.get("model_type") == DeepSeekOCRConfig.model_type:
        return "project"
    if config.get("model_type") == OFFICIAL_MODEL_TYPE or "language_config" in config:
        return "official"
    if config.get("is_encoder_decoder") or config.get("model_type") in _SEQ2SEQ_TYPES:
        return "seq2seq"
    raise ModelSourceError(f"{folder} holds a {config.get('model_type', 'unknown')!r} model: neither DeepSeek-OCR "
                           "(this project's or the official layout) nor a seq2seq baseline")


def resolve_model_source(name: str) -> ModelSource:
    """Classify `name`; a path that does not exist or a folder that holds no usable model is a ModelSourceError."""
    name = str(name)
    if name in PRESETS:
        return ModelSource("preset", name)
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.exists():
            raise ModelSourceError(f"model folder not found: {name}")
        if not path.is_dir():
            raise ModelSourceError(f"{name} is a file; pass the model folder that holds its config.json")
        return ModelSource(_folder_kind(path), name, path)
    if _HUB_ID.match(name):
        return ModelSource("hub", name)
    raise ModelSourceError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), an existing folder, nor a hub "
                           "id such as deepseek-ai/DeepSeek-OCR")


def download(source: ModelSource, allow_patterns: Optional[list[str]] = None) -> ModelSource:
    """The hub id's snapshot folder, classified; offline, only a snapshot already in the local cache will do."""
    if source.kind != "hub":
        return source
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(source.name, allow_patterns=allow_patterns, local_files_only=offline()))
    except Exception as err:  # offline, unknown repo, missing auth: one clear line instead of a traceback
        if offline():
            raise ModelSourceError(
                f"model {source.name!r} is not available offline (HF_HUB_OFFLINE=1 and it is not in the local "
                f"cache); pass a local folder, or the preset {TINY_PRESET!r} to try the pipeline") from None
        raise ModelSourceError(f"cannot fetch {source.name!r} from the Hugging Face hub ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); pass a local "
                               "folder holding its config.json and *.safetensors") from None
    return ModelSource(_folder_kind(path), source.name, path)


__all__ = ["ModelSource", "ModelSourceError", "OFFICIAL_HUB_ID", "PRESETS", "download", "offline",
           "resolve_model_source"]
