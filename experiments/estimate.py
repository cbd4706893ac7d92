"""The wall-time estimate printed before a run: steps x seconds per step, documents x seconds per document.

Seconds come from this experiment's own finished stages once there are any (measured step time of the same kind
of model, measured generation time per document), otherwise from the config's `estimate` block, which says
where its figures were measured. Data preparation and scoring are not counted (seconds to minutes).
"""
from __future__ import annotations

import math
from statistics import mean
from typing import Any, Optional

from config import TrainingConfig, from_dict
from experiments.config import LEAD_TYPES, ArmSpec, ExperimentConfig, arm_training, trains


def _family(arm: ArmSpec) -> str:
    return "seq2seq" if arm.type == "seq2seq" else "deepseek-ocr"


def planned_steps(exp: ExperimentConfig, arm: ArmSpec) -> Optional[int]:
    cfg = from_dict(TrainingConfig, arm_training(exp, arm))
    if cfg.max_steps > 0:
        return cfg.max_steps
    records = min(n for n in (cfg.max_train_samples, exp.dataset.max_samples) if n is not None) \
        if (cfg.max_train_samples or exp.dataset.max_samples) else None
    if records is None:
        return None  # the whole training split: unknown until prepared
    return cfg.num_epochs * math.ceil(records / (cfg.batch_size * cfg.gradient_accumulation_steps))


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def estimate_table(exp: ExperimentConfig, markers: dict[str, dict[str, Any]]) -> str:
    """Lines of the estimate for the stages not done yet; `markers` holds the done stages' markers by id."""
    measured_step = {}
    for family in ("deepseek-ocr", "seq2seq"):
        times = [m["step_seconds"] for m in markers.values() if m.get("kind") == "train" and m.get("step_seconds")
                 and _family(next(a for a in exp.arms if a.name == m["arm"])) == family]
        if times:
            measured_step[family] = mean(times)
    per_doc = [m["seconds"] / m["generated"] for m in markers.values()
               if m.get("kind") == "generate" and m.get("generated")]
    doc_s = mean(per_doc) if per_doc else exp.estimate.generate_doc_s
    lines, total, unknown = [], 0.0, False
    for arm in exp.arms:
        if arm.type in LEAD_TYPES:
            continue
        parts = []
        if trains(arm) and f"train/{arm.name}" not in markers:
            steps = planned_steps(exp, arm)
            hint = exp.estimate.seq2seq_step_s if arm.type == "seq2seq" else None
            step_s = measured_step.get(_family(arm), hint or exp.estimate.train_step_s)
            seconds = steps * step_s if steps is not None else None
            parts.append(f"train {steps if steps is not None else '?'} steps x {step_s:.3g} s = {_duration(seconds)}")
            total += seconds or 0
            unknown |= seconds is None
        if f"generate/{arm.name}" not in markers:
            seconds = exp.dataset.test_samples * doc_s
            parts.append(f"generate {exp.dataset.test_samples} docs x {doc_s:.3g} s = {_duration(seconds)}")
            total += seconds
        if parts:
            lines.append(f"  {arm.name:<24} " + "; ".join(parts))
    if not lines:
        return "Estimated wall time: nothing left to train or generate."
    head = ("Estimated wall time of what is left (seconds per step and per document measured in this experiment "
            f"where it has them, otherwise the config's, {exp.estimate.measured_on}):")
    tail = f"  total about {_duration(total)}" + (" plus the arms whose step count is unknown "
                                                  "(set max_steps or dataset.max_samples)" if unknown else "")
    return "\n".join([head, *lines, tail])
