"""Where a model comes from, decided once: every loader asks `resolve_model_source`.

    tiny-random, tiny-random-ocr2  presets (presets.py): built here with seeded random weights
    tiny-random-bart
    ./deepseek-summarizer          project folder: written by `save_pretrained` (this project's training, or
                                   transformers' own class for DeepSeek-OCR-2)
    ./exported, ./DeepSeek-OCR     official folder: the official checkpoint layout (config.json + safetensors)
    ./baseline-summarizer          seq2seq folder: a BART/T5 baseline trained here (or any encoder-decoder)
    user/any-name                  hub id: its config.json is fetched (or read from the local cache; offline, only
                                   from it) and the snapshot folder is classified like a local folder

A folder is classified by its config.json alone, never by its name, so a fine-tune pushed as
`username/deepseek-summarizer` is DeepSeek-OCR; which backbone (DeepSeek-OCR or DeepSeek-OCR-2) the backbone
registry says (model/backbones). A name that looks like a path (it starts with ./, ../, / or ~, or
names an existing place) is a path: when it does not exist, the error says "folder not found", not "cannot
download". Nothing heavy is imported here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from config import GenerationSettings, RenderConfig, UserError, first_line, load_run_settings
from model import backbones
from model.checkpoint.presets import PRESETS
from model.configuration import TINY_PRESET

SourceKind = Literal["preset", "project", "official", "seq2seq"]
Task = Literal["deepseek-ocr", "seq2seq"]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SEQ2SEQ_TYPES = {"bart", "t5", "mt5", "pegasus", "led", "mbart"}
# What the loader reads of a snapshot: configs, settings, tokenizer files and weights (no READMEs, no images).
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]


class ModelSourceError(UserError, ValueError):
    """A model name that leads nowhere; the message is one line saying why and what to pass instead."""


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    name: str  # as the user gave it
    path: Optional[Path] = None  # the folder (a hub id's snapshot folder); None for presets
    hub_id: Optional[str] = None  # the hub id it was fetched from, if any
    backbone_name: Optional[str] = None  # a vision-language source's backbone (model/backbones); None for seq2seq

    @property
    def backbone(self) -> backbones.Backbone:
        if self.backbone_name is None:
            raise ModelSourceError(f"{self.name} is a seq2seq model, not DeepSeek-OCR")
        return backbones.named(self.backbone_name)

    @property
    def has_backbone(self) -> bool:
        """A vision-language model this project fine-tunes (a backbone's), not a seq2seq baseline."""
        return self.backbone_name is not None

    @property
    def task(self) -> Task:
        return "deepseek-ocr" if self.has_backbone else "seq2seq"

    def saved_settings(self) -> tuple[RenderConfig, GenerationSettings]:
        """The render and generation settings saved with the model; defaults for presets and official folders."""
        return load_run_settings(self.path) if self.path else (RenderConfig(), GenerationSettings())


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~", ".\\")) or name in (".", "..") or os.sep + os.sep in name \
        or name.count("/") > 1 or name.endswith("/")


def folder_kind(folder: Path) -> tuple[SourceKind, Optional[str]]:
    """(kind, backbone name) of a model folder, from its config.json."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{folder} is not a model folder: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelSourceError(f"{config_file} is not valid JSON ({err})") from None
    if found := backbones.recognize(config):
        backbone, layout = found
        return layout, backbone.name
    if config.get("is_encoder_decoder") or config.get("model_type") in _SEQ2SEQ_TYPES:
        return "seq2seq", None
    raise ModelSourceError(f"{folder} holds a {config.get('model_type', 'unknown')!r} model: neither DeepSeek-OCR "
                           "(this project's, transformers' or the official layout) nor a seq2seq baseline")


def resolve_model_source(name: str, weights: bool = False) -> ModelSource:
    """Classify `name` from its config.json. A hub id is fetched first: its config and settings only, or with
    `weights` the whole snapshot the loader needs. A path that does not exist, a folder that holds no usable model
    or a hub id that cannot be fetched is a ModelSourceError."""
    name = str(name)
    if name in PRESETS:
        backbone = backbones.of_preset(name)
        return ModelSource("preset", name, backbone_name=backbone.name if backbone else None)
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.exists():
            raise ModelSourceError(f"model folder not found: {name}")
        if not path.is_dir():
            raise ModelSourceError(f"{name} is a file; pass the model folder that holds its config.json")
        return _folder_source(name, path)
    if _HUB_ID.match(name):
        try:
            folder = _snapshot(name, WEIGHT_PATTERNS if weights else ["*.json"])
        except ModelSourceError:
            backbone = backbones.of_hub_id(name)
            if backbone is None or weights:
                raise
            # A backbone knows the architecture of its own hub ids (DeepSeek-OCR's is DeepSeekOCRConfig(), which
            # fills every key and shape of the real checkpoint: tests/model/test_checkpoint_keys.py): the kind and
            # sizes are known without the hub, only the weights are not (loading them needs the hub or the cache).
            return ModelSource(backbone.hub_ids[name], name, None, hub_id=name, backbone_name=backbone.name)
        return _folder_source(name, folder, hub_id=name)
    raise ModelSourceError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), an existing folder, nor a hub "
                           "id such as deepseek-ai/DeepSeek-OCR")


def _folder_source(name: str, folder: Path, hub_id: Optional[str] = None) -> ModelSource:
    kind, backbone = folder_kind(folder)
    return ModelSource(kind, name, folder, hub_id, backbone)


def _snapshot(hub_id: str, allow_patterns: list[str]) -> Path:
    """The hub id's snapshot folder; offline, only a snapshot already in the local cache will do."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=allow_patterns, local_files_only=offline()))
    except Exception as err:  # offline, unknown repo, missing auth: one clear line instead of a traceback
        if offline():
            raise ModelSourceError(
                f"model {hub_id!r} is not available offline (HF_HUB_OFFLINE=1 and it is not in the local "
                f"cache); pass a local folder, or the preset {TINY_PRESET!r} to try the pipeline") from None
        raise ModelSourceError(f"cannot fetch {hub_id!r} from the Hugging Face hub "
                               f"({first_line(err, with_type=True)}); pass a local folder holding its config.json "
                               "and *.safetensors") from None


def with_weights(source: ModelSource) -> ModelSource:
    """`source` with its whole snapshot present (a hub id classified from its config alone fetches the rest)."""
    if source.hub_id is None:
        return source
    return dataclasses.replace(source, path=_snapshot(source.hub_id, WEIGHT_PATTERNS))


__all__ = ["ModelSource", "ModelSourceError", "PRESETS", "Task", "offline", "resolve_model_source", "with_weights"]
