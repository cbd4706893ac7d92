"""The experiment config: a dataset, shared DeepSeek-OCR training and generation settings, and the arms.

Everything is checked when the file is loaded, before any work starts: unknown keys and wrong types (through
`config.from_dict`, so messages name the key), unknown arm types, a dataset that is not there, and settings that
contradict the arm they are given to. Each problem is one `ConfigError` line.
"""
from __future__ import annotations

import copy
import os
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Optional

from config import (
    PAGE_GEOMETRY,
    BackboneName,
    ConfigError,
    GenerationSettings,
    RenderConfig,
    TrainingConfig,
    apply_overrides,
    first_line,
    from_dict,
    load_json,
    to_dict,
)
from config.loading import Bool, Float, Int, Str, settings
from model.checkpoint.presets import TINY_SEQ2SEQ

ArmType = Literal["pixels", "text", "seq2seq", "lead", "lead-3"]
# Arms that read no model: the first `sentences` of the document ("lead-3", the seed's name, is Lead with 3).
LEAD_TYPES = ("lead", "lead-3")
LEAD_SENTENCES = 3
# Per arm, these come from the arm itself and the experiment's folders; setting them by hand would contradict it.
RUNNER_KEYS = ("train_file", "val_file", "hf_dataset", "output_dir", "task", "input_mode", "generation")
# data.prepare_datasets renders with these render keys; others would give pages the runner cannot prepare.
PREPARED_RENDER_KEYS = ("mode", "font_size", "overflow")


@settings
class DatasetSpec:
    source: Str = "bundled"  # as for data.prepare_datasets: hub id, local file or folder, or "bundled"
    subset: Optional[Str] = None
    text_field: Optional[Str] = None
    summary_field: Optional[Str] = None
    max_samples: Optional[Int] = None  # records kept per split (train, val, test) when preparing
    test_samples: Int = 100  # test documents summarized and scored by every arm (the first ones of the split)
    seed: Int = 42

    def __post_init__(self) -> None:
        # Keys named within this block ('dataset.' is added above it), so a flag that gave one is named instead.
        for key, value in (("test_samples", self.test_samples), ("max_samples", self.max_samples)):
            if value is not None and value < 1:
                raise ConfigError(f"config key '{key}' must be at least 1, got {value}")
        if self.max_samples is not None and self.test_samples > self.max_samples:
            raise ConfigError(f"config key 'test_samples' ({self.test_samples}) is more than the "
                              f"{self.max_samples} test records that config key 'max_samples' prepares")


@settings
class EstimateSpec:
    """Seconds used for the wall-time estimate printed before a run, until this run has measured its own."""

    train_step_s: Float = 1.0  # a DeepSeek-OCR optimizer step
    seq2seq_step_s: Optional[Float] = None  # a seq2seq baseline step; None: train_step_s
    generate_doc_s: Float = 1.0
    measured_on: Str = "not measured"  # where the two figures come from


@settings
class ArmSpec:
    name: Str
    type: ArmType
    render: dict = field(default_factory=dict)  # pixels: over the shared training.render
    training: dict = field(default_factory=dict)  # TrainingConfig keys over the shared block
    generation: dict = field(default_factory=dict)  # GenerationSettings keys over the shared block
    model_name: Optional[Str] = None  # seq2seq: hub id, folder or "tiny-random-bart"
    train: Bool = True  # seq2seq: False scores the model zero-shot
    # Generate with the model another arm trained (of this arm's type), under this arm's generation settings:
    # several ways of reading with one model (e.g. long documents truncated or hierarchical) for one training.
    model_of: Optional[Str] = None
    sentences: Optional[Int] = None  # lead: sentences of the document taken as its summary (default 3)
    # pixels and text: the backbone this arm fine-tunes (model/backbones), in place of the shared model's: the
    # same size of the other backbone (tiny-random -> tiny-random-ocr2, the real checkpoint -> the real one).
    backbone: Optional[BackboneName] = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"arm name {self.name!r} must be letters, digits, '-', '_' or '.' (it names a folder)")
        if self.sentences is not None and self.sentences < 1:
            raise ConfigError(f"config key 'sentences' must be at least 1, got {self.sentences}")


@settings
class ExperimentConfig:
    name: Str
    arms: list[ArmSpec]
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    output_dir: Optional[Str] = None  # default: experiments_output/<name>
    training: dict = field(default_factory=dict)  # TrainingConfig keys shared by DeepSeek-OCR arms
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    bootstrap: Int = 1000  # resamples for the ROUGE confidence intervals
    estimate: EstimateSpec = field(default_factory=EstimateSpec)
    comment: list[Str] = field(default_factory=list)  # free text: measured memory, provenance, caveats

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("config key 'arms' needs at least one arm")
        names = [arm.name for arm in self.arms]
        repeated = next((n for n in names if names.count(n) > 1), None)
        if repeated:
            raise ConfigError(f"arm name {repeated!r} is used twice")
        if self.bootstrap < 0:
            raise ConfigError(f"config key 'bootstrap' must be >= 0, got {self.bootstrap}")

    @property
    def folder(self) -> Path:
        return Path(self.output_dir or Path("experiments_output") / self.name)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` on top, nested objects merged key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def trains(arm: ArmSpec) -> bool:
    """Whether the arm has a training stage of its own (not Lead, not zero-shot, not another arm's model)."""
    return arm.type not in LEAD_TYPES and arm.train and arm.model_of is None


def model_arm(exp: ExperimentConfig, arm: ArmSpec) -> ArmSpec:
    """The arm whose training made the model `arm` generates with: the one `model_of` names, else `arm`."""
    return next(other for other in exp.arms if other.name == arm.model_of) if arm.model_of else arm


def lead_sentences(arm: ArmSpec) -> int:
    return arm.sentences or LEAD_SENTENCES


def arm_training(exp: ExperimentConfig, arm: ArmSpec) -> dict[str, Any]:
    """The TrainingConfig keys of a trained arm, without the runner's files, folder and task.

    The generation settings are the experiment's, so the saved model folder decodes as the generate stage does
    (they change no trained weights, so experiments/plan.py leaves them out of training's identity).
    """
    generation = to_dict(arm_generation(exp, arm))
    if arm.type == "seq2seq":
        # The shared block is DeepSeek-OCR's (render, LoRA, vision cache...); a baseline brings its own.
        return merged(arm.training, {"model_name": arm.model_name, "generation": generation})
    keys = merged(exp.training, {**arm.training, "generation": generation})
    if arm.type == "pixels" and arm.render:
        keys = merged(keys, {"render": arm.render})
    if arm.type == "text":
        keys["input_mode"] = "text"
    if arm.backbone:
        keys["model_name"] = backbone_model(keys.get("model_name") or TrainingConfig().model_name, arm.backbone)
    return keys


def backbone_model(model_name: str, backbone: str) -> str:
    """The model of `backbone` that matches `model_name` (a preset or hub id of another backbone) in size."""
    from model import backbones

    target = backbones.named(backbone)
    for own in backbones.BACKBONES.values():
        for names, targets in ((own.presets, target.presets), (list(own.hub_ids), list(target.hub_ids))):
            if model_name in names:
                return targets[names.index(model_name)]
    raise ConfigError(f"config key 'backbone' maps a preset or a known hub id to its {backbone} counterpart; "
                      f"{model_name!r} is neither: set the arm's training.model_name instead")


def arm_generation(exp: ExperimentConfig, arm: ArmSpec) -> GenerationSettings:
    return apply_overrides(exp.generation, arm.generation)


def arm_render(exp: ExperimentConfig, arm: ArmSpec) -> RenderConfig:
    """The pages the arm's model reads: those of the arm that trained it."""
    return from_dict(TrainingConfig, arm_training(exp, model_arm(exp, arm))).render


def _check_arm(exp: ExperimentConfig, arm: ArmSpec) -> None:
    where = f"arm {arm.name!r} ({arm.type})"
    for source, keys in (("training", exp.training), (f"arms.{arm.name}.training", arm.training)):
        owned = next((k for k in RUNNER_KEYS if k in keys), None)
        if owned:
            raise ConfigError(f"config key '{source}.{owned}' is set by the runner from the arm type and folders; "
                              "remove it")
    if arm.render and arm.type != "pixels":
        raise ConfigError(f"{where}: 'render' applies to pixels arms only")
    if arm.backbone is not None and arm.type not in ("pixels", "text"):
        raise ConfigError(f"{where}: 'backbone' applies to pixels and text arms only")
    if arm.sentences is not None and arm.type != "lead":
        raise ConfigError(f"{where}: 'sentences' applies to lead arms only"
                          + (" (lead-3 reads 3; use type 'lead' for another number)" if arm.type == "lead-3" else ""))
    if arm.type in LEAD_TYPES:
        if arm.training or arm.generation or arm.model_name or arm.model_of:
            raise ConfigError(f"{where}: Lead-N takes no model, training or generation settings")
        return
    if arm.model_of is not None:
        _check_model_of(exp, arm, where)
    elif arm.type in ("pixels", "text") and (arm.model_name or not arm.train):
        raise ConfigError(f"{where}: DeepSeek-OCR arms always train the model of the shared 'training.model_name'; "
                          "'model_name' and 'train' are for seq2seq arms")
    if arm.type == "seq2seq" and arm.model_of is None:
        if not arm.model_name:
            raise ConfigError(f"{where}: needs 'model_name' (e.g. facebook/bart-large-cnn, or {TINY_SEQ2SEQ})")
        if not arm.train and arm.training:
            raise ConfigError(f"{where}: 'train' is false (zero-shot), so 'training' settings would be unused")
        if arm.model_name == TINY_SEQ2SEQ and not arm.train:
            raise ConfigError(f"{where}: {TINY_SEQ2SEQ} has random weights; zero-shot it would only score noise")
    try:
        arm_generation(exp, arm)
        if not trains(arm):
            return
        cfg = from_dict(TrainingConfig, arm_training(exp, arm))  # every key and contradiction it knows
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if arm.type == "seq2seq" and cfg.lora.enabled:
        raise ConfigError(f"{where}: LoRA is for DeepSeek-OCR arms; the seq2seq trainer fine-tunes all weights")
    if arm.type == "pixels" and arm.backbone:
        PAGE_GEOMETRY[arm.backbone].view(cfg.render.mode)  # a mode it cannot read: one line, before anything runs
    if arm.type == "pixels":
        default = RenderConfig()
        unprepared = [key for key, value in to_dict(cfg.render).items()
                      if key not in PREPARED_RENDER_KEYS and value != getattr(default, key)]
        if unprepared:
            raise ConfigError(f"{where}: render key '{unprepared[0]}' cannot be prepared by data.prepare_datasets "
                              f"(it takes {', '.join(PREPARED_RENDER_KEYS)}; leave the others at their defaults)")


def _check_model_of(exp: ExperimentConfig, arm: ArmSpec, where: str) -> None:
    """An arm that reads another arm's model names a trained arm of its own type and sets nothing of that model."""
    other = next((a for a in exp.arms if a.name == arm.model_of), None)
    if other is None or other is arm:
        names = ", ".join(a.name for a in exp.arms if a is not arm)
        raise ConfigError(f"{where}: 'model_of' must name another arm of this config ({names}), "
                          f"got {arm.model_of!r}")
    if other.model_of is not None:
        raise ConfigError(f"{where}: 'model_of' names arm {other.name!r}, which reads the model of arm "
                          f"{other.model_of!r}; name {other.model_of!r}")
    if not trains(other):
        raise ConfigError(f"{where}: 'model_of' names arm {other.name!r}, which trains no model")
    if other.type != arm.type:
        raise ConfigError(f"{where}: 'model_of' names arm {other.name!r} of type {other.type}; an arm reading its "
                          "model is of that type too")
    if arm.training or arm.render or arm.model_name or arm.backbone or not arm.train:
        raise ConfigError(f"{where}: reads the model of arm {other.name!r} as trained; 'training', 'render', "
                          "'model_name' and 'train' belong to that arm (only 'generation' is this arm's)")


def check_dataset(spec: DatasetSpec) -> None:
    """A dataset that is plainly not there fails now rather than after other arms have run."""
    from data.dataset_loader import BUNDLED_SOURCES, LOCAL_FORMATS

    if spec.source in BUNDLED_SOURCES:
        return

    path = Path(spec.source).expanduser()
    if path.exists():
        return
    # What data.dataset_loader would read as a local path rather than a hub id.
    if path.suffix.lower() in LOCAL_FORMATS or spec.source.startswith((".", "/", "~")):
        raise ConfigError(f"dataset not found: {spec.source} (config key 'dataset.source')")
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import scan_cache_dir

        try:
            cached = {repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "dataset"}
        except Exception:  # no cache folder yet
            cached = set()
        if spec.source not in cached:
            raise ConfigError(f"dataset {spec.source!r} is not in the local Hugging Face cache and the hub is "
                              "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); run once online or use a local file")
        return
    from huggingface_hub import HfApi

    try:
        exists = HfApi().repo_exists(spec.source, repo_type="dataset", token=os.environ.get("HF_TOKEN"))
    except Exception as err:  # network down, proxy...: say so now, not after hours of other arms
        raise ConfigError(f"cannot check dataset {spec.source!r} on the Hugging Face hub: {first_line(err)}") from None
    if not exists:
        raise ConfigError(f"dataset {spec.source!r} does not exist on the Hugging Face hub "
                          "(config key 'dataset.source')")


def load_experiment(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None,
                    max_steps: Optional[int] = None) -> ExperimentConfig:
    """`read_experiment`, then the dataset's existence (which may ask the hub)."""
    exp = read_experiment(path, overrides, max_steps)
    check_dataset(exp.dataset)
    return exp


def read_experiment(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None,
                    max_steps: Optional[int] = None) -> ExperimentConfig:
    """Read and check an experiment file; `overrides` (dotted keys, None skipped) go on top of it, and
    `max_steps` caps the training of every trained arm (DeepSeek-OCR and seq2seq) for a quicker run."""
    exp = load_json(ExperimentConfig, path)
    if overrides:
        exp = apply_overrides(exp, overrides)
    if max_steps is not None:
        exp.training["max_steps"] = max_steps
        for arm in exp.arms:
            if arm.type == "seq2seq" and trains(arm):
                arm.training["max_steps"] = max_steps
    for arm in exp.arms:
        _check_arm(exp, arm)
    return exp
