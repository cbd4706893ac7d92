"""Records for training: prepared JSONL files (image paths made absolute) or a hub dataset, checked up front.

Every record handed to a trainer is ``{"id", "text", "summary", "references", "images"?, "render"?}``. Problems
surface as one `TrainDataError` line naming the file and record, before any model is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from config import TrainingConfig, UserError, apply_overrides
from config.jobs import PrepareJob
from data.dataset_loader import HUB_SPLIT_ALIASES, DatasetError, DatasetLoader, stable_id
from data.jsonl import JsonlError, iter_jsonl


class TrainDataError(UserError, ValueError):
    """Training data that cannot be used; the message is one line for the user."""


def _check_record(record: dict[str, Any], where: str, base: Path, need_images: bool) -> dict[str, Any]:
    for key in ("text", "summary"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise TrainDataError(f"{where}: record has no '{key}' (prepared records need 'text' and 'summary'; "
                                 "see python -m data.prepare_datasets)")
    out = dict(record)
    out.setdefault("id", stable_id(record["text"], record["summary"]))
    out["references"] = record.get("references") or [record["summary"]]
    if record.get("images"):
        # Prepared files store page paths relative to their own folder; trainers get absolute ones.
        out["images"] = [str((base / p).resolve()) for p in record["images"]]
        missing = next((p for p in out["images"] if not Path(p).is_file()), None)
        if need_images and missing:
            raise TrainDataError(f"{where}: page image not found: {missing}")
    return out


def load_jsonl_records(path: str | Path, *, limit: Optional[int] = None, need_images: bool = False) -> list[dict]:
    """The first `limit` records of a prepared JSONL file, validated, with absolute image paths."""
    path = Path(path)
    if not path.is_file():
        raise TrainDataError(f"data file not found: {path}")
    records = []
    try:
        for number, record in enumerate(iter_jsonl(path), start=1):
            if limit is not None and len(records) >= limit:
                break
            records.append(_check_record(record, f"{path}:{number}", path.parent, need_images))
    except JsonlError as err:
        raise TrainDataError(str(err)) from None
    if not records:
        raise TrainDataError(f"data file is empty: {path}")
    return records


def _split_name(name: str, flag: str) -> str:
    """Our split name ("train", "val", "test") for a hub split name such as "validation"."""
    for split, aliases in HUB_SPLIT_ALIASES.items():
        if name == split or name in aliases:
            return split
    choices = sorted({a for aliases in HUB_SPLIT_ALIASES.values() for a in aliases})
    raise TrainDataError(f"{flag} must be one of {', '.join(choices)}, got {name!r}")


def load_hub_records(cfg: TrainingConfig, token: Optional[str] = None) -> tuple[list[dict], list[dict]]:
    """(train, val) records streamed from `cfg.hf_dataset`, stopping once the asked-for samples are in."""
    train_split = _split_name(cfg.hf_train_split, "--hf-train-split")
    val_split = _split_name(cfg.hf_val_split, "--hf-val-split") if cfg.hf_val_split else "val"
    limits = {train_split: cfg.max_train_samples, val_split: cfg.max_eval_samples}
    cap = None if None in limits.values() else max(limits.values())
    found: dict[str, list[dict]] = {train_split: [], val_split: []}
    try:
        loader = DatasetLoader(cfg.hf_dataset, max_samples=cap, seed=cfg.seed, token=token)
        for split, record in loader:
            if split not in found:
                if split == "test":  # streamed last: nothing we need comes after it
                    break
                continue
            if limits[split] is None or len(found[split]) < limits[split]:
                found[split].append(record)
    except DatasetError as err:
        raise TrainDataError(str(err)) from None
    if not found[train_split]:
        raise TrainDataError(f"{cfg.hf_dataset!r} has no usable records in split {cfg.hf_train_split!r}")
    return found[train_split], found[val_split]


def with_prepared_defaults(cfg: TrainingConfig) -> TrainingConfig:
    """`cfg` as given when it names its data; otherwise reading what `python -m data.prepare_datasets` writes by
    default (prepared_data/train.jsonl and val.jsonl, in the working directory), which the seed's command
    `python -m training.train --config config.json` relies on."""
    if cfg.train_file or cfg.hf_dataset:
        return cfg
    folder = Path(PrepareJob().output_dir)
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    if cfg.val_file or not train.is_file():
        raise TrainDataError(f"no training data: pass --train FILE (a prepared JSONL) or --hf-dataset ID; with "
                             f"neither (nor --val), {train} is used once python -m data.prepare_datasets wrote it")
    found = {"train_file": str(train), "val_file": str(val) if val.is_file() else None}
    print(f"no --train or --hf-dataset given: training on {train}"
          + (f", validating on {val}" if val.is_file() else " (no validation file)"), flush=True)
    return apply_overrides(cfg, found)


def load_training_records(cfg: TrainingConfig, token: Optional[str] = None) -> tuple[list[dict], list[dict]]:
    """(train, val) records for `cfg` (after `with_prepared_defaults`): local files when given, otherwise the hub
    dataset."""
    if not cfg.train_file:
        return load_hub_records(cfg, token)
    need_images = cfg.task == "deepseek-ocr" and cfg.input_mode == "pixels"
    train = load_jsonl_records(cfg.train_file, limit=cfg.max_train_samples, need_images=need_images)
    val = load_jsonl_records(cfg.val_file, limit=cfg.max_eval_samples, need_images=need_images) \
        if cfg.val_file else []
    return train, val
