"""What a run leaves in its output folder besides weights: the guard against mixing runs, checkpoint selection
for `--resume`, the loss plot and the model card.

transformers 5.23 writes a checkpoint in place (no temporary folder), so a run killed mid-save leaves a
`checkpoint-N` folder that looks real. Its `trainer_state.json` is written last, so a checkpoint counts as
complete only when that file parses and names step N; incomplete ones are removed before resuming (and a folder
about to be written again loses that file first: training/faults.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from config import TRAINING_CONFIG_FILE, TrainingConfig, UserError, to_dict

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # the Trainer's; written last into a checkpoint folder
RUN_MARKERS = (TRAINING_CONFIG_FILE, STATE_FILE, "model.safetensors", "adapter_model.safetensors")
PLOT_FILE = "loss_curves.png"
CARD_FILE = "README.md"


class OutputDirError(UserError, ValueError):
    """An output folder or checkpoint that cannot be used as asked; one line for the user."""


def checkpoint_step(path: Path) -> Optional[int]:
    """N for a complete `checkpoint-N` folder, None for anything else (a partial save, another folder)."""
    match = CHECKPOINT.match(path.name)
    if not match or not path.is_dir():
        return None
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return int(match.group(1)) if state.get("global_step") == int(match.group(1)) else None


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and (any((folder / name).exists() for name in RUN_MARKERS)
                                or any(CHECKPOINT.match(p.name) for p in folder.iterdir()))


def prepare_output_dir(folder: str | Path, *, overwrite: bool, resume: Optional[str]) -> None:
    """Refuse a folder holding another run unless asked to overwrite or resume; `--overwrite` drops old checkpoints."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"output path {folder} exists and is not a folder")
    if not holds_run(folder) or resume:
        return
    if not overwrite:
        raise OutputDirError(f"output folder {folder} already holds a training run; pass --resume to continue it "
                             "or --overwrite to replace it")
    for path in folder.iterdir():  # stale checkpoints would otherwise be picked up by a later --resume
        if CHECKPOINT.match(path.name) and path.is_dir():
            shutil.rmtree(path)


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """The complete checkpoint folders in `folder`, oldest step first."""
    folder = Path(folder)
    steps = {path: checkpoint_step(path) for path in (folder.iterdir() if folder.is_dir() else ())}
    return sorted((path for path, step in steps.items() if step is not None), key=steps.__getitem__)


def resolve_checkpoint(folder: str | Path, resume: str) -> Optional[str]:
    """The checkpoint to resume from: the latest complete one for "latest" (None when there is none), else the
    named folder, which must be complete. Incomplete checkpoints left by a killed run are deleted."""
    folder = Path(folder)
    candidates = [p for p in folder.iterdir() if CHECKPOINT.match(p.name)] if folder.is_dir() else []
    for path in candidates:
        if checkpoint_step(path) is None:
            print(f"removing incomplete checkpoint {path} (the run was stopped while saving it)", flush=True)
            shutil.rmtree(path, ignore_errors=True)
    if resume != "latest":
        named = Path(resume) if Path(resume).exists() else folder / resume
        if checkpoint_step(named) is None:
            raise OutputDirError(f"cannot resume from {resume}: not a complete checkpoint-N folder "
                                 f"(it needs a {STATE_FILE})")
        return str(named)
    complete = complete_checkpoints(folder)
    return str(complete[-1]) if complete else None


def plot_losses(log_history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """A PNG of training loss and validation loss against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "training loss", "-"), (val, "validation loss", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or val:  # a run shorter than one logging interval has no points yet
        ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).stem}.tmp{Path(path).suffix}")  # suffix tells matplotlib the format
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return Path(path)


def _data_line(cfg: TrainingConfig, counts: dict[str, Any]) -> str:
    source = f"hub dataset `{cfg.hf_dataset}`" if not cfg.train_file else \
        f"`{cfg.train_file}`" + (f" (validation `{cfg.val_file}`)" if cfg.val_file else "")
    line = f"{source}: {counts.get('train', 0)} training and {counts.get('val', 0)} validation records"
    if "context" in counts:  # DeepSeek-OCR (training/context.py)
        over = counts["over_context"]
        line += (f"; left out as longer than the decoder's context of {counts['context']} positions: "
                 f"{over.get('train', 0)} training and {over.get('val', 0)} validation records")
    return line


def _metrics_line(ocr: bool) -> str:
    if ocr:
        return ("Final evaluation on the validation records (cross-entropy loss; ROUGE comes from "
                "`python -m evaluation.generate` and `python -m evaluation.evaluate`):")
    return "Final evaluation on the validation records (ROUGE F1 x100, decoding with `generation_settings.json`):"


def write_model_card(folder: str | Path, cfg: TrainingConfig, counts: dict[str, Any],
                     metrics: dict[str, Any]) -> Path:
    """README.md: what was trained on what, the final metrics, intended use and how to load the folder."""
    folder = Path(folder)
    ocr = cfg.task == "deepseek-ocr"
    pages = ocr and cfg.input_mode == "pixels"
    kind = "seq2seq baseline (text → summary)" if not ocr else \
        "DeepSeek-OCR (page images → summary)" if pages else "DeepSeek-OCR decoder on text tokens (text → summary)"
    base = "" if Path(cfg.model_name).exists() else f"base_model: {cfg.model_name}\n"
    load = f"`python -m inference.infer --model_path {folder} --input_file article.txt`"
    if not ocr:
        load += (" or, in Python:\n\n```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
                 f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}\")\n"
                 f"model = AutoModelForSeq2SeqLM.from_pretrained(\"{folder}\")\n```\n")
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
    text = f"""---
{base}library_name: transformers
pipeline_tag: summarization
tags: [summarization{', deepseek-ocr' if ocr else ''}]
---

# {cfg.hub_model_id or folder.name}

A {kind} summarizer fine-tuned from `{cfg.model_name}` with `python -m training.train`.

## Data

{_data_line(cfg, counts)}.

## Metrics

{_metrics_line(ocr)}

```json
{json.dumps(shown, indent=2)}
```

Loss curves: `{PLOT_FILE}`.

## Intended use

Abstractive summaries of documents like the training data ({'rendered as page images' if pages
else 'as plain text'}). Summaries can contain errors or content absent from the source; review them before use.

## How to load

{load}
The folder carries `render_config.json` and `generation_settings.json`, so
inference renders and decodes exactly as evaluation during training did.

## Training configuration

```json
{json.dumps(to_dict(cfg), indent=2)}
```
"""
    path = folder / CARD_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
