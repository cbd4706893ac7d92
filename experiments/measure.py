"""Figures read back from a finished stage's outputs: training steps and step time, generated documents."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def training_figures(model_folder: Path) -> dict[str, Any]:
    """Optimizer steps, seconds per step (the Trainer's own runtime, without loading) and truncation counts."""
    state = json.loads((model_folder / "trainer_state.json").read_text(encoding="utf-8"))
    history = state.get("log_history", [])
    steps = state.get("global_step") or 0
    runtime = next((h["train_runtime"] for h in reversed(history) if "train_runtime" in h), None)
    figures: dict[str, Any] = {"train_steps": steps,
                               "step_seconds": round(runtime / steps, 4) if runtime and steps else None}
    for key in ("truncated_sources", "truncated_targets"):
        last = next((h[key] for h in reversed(history) if key in h), None)
        if last is not None:
            figures[key] = last
    return figures


def generation_figures(predictions: Path) -> dict[str, Any]:
    with predictions.open(encoding="utf-8") as lines:
        return {"documents": sum(1 for line in lines if line.strip())}
