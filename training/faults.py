"""Faults a run survives with its checkpoints intact: a non-finite loss or gradient, a kill or a full disk while
a checkpoint is being written.

A non-finite step is caught before the optimizer applies it, so no checkpoint of a broken model is ever written:
the run stops there (`on_nonfinite` "stop") or drops that step's update and counts it ("skip"). Checkpoints are
all or nothing: the Trainer writes a folder's `trainer_state.json` last and resuming takes only folders where it
is readable (run_outputs.checkpoint_step); a folder about to be written again loses that file first, so a kill
while rewriting it never leaves a mix of two saves that looks complete. A save that fills the disk ends the run
with one line, and its partial folder is removed.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import TrainerCallback

from config import ConfigError, UserError
from training.run_outputs import STATE_FILE, complete_checkpoints

# Below this many free bytes, a failed torch.save is taken for a full disk (a write fails once the disk cannot
# hold the next block, so a full disk is left with less than that).
FULL_DISK_BYTES = 1 << 20


class NonFiniteStep(RuntimeError):
    """An optimizer step whose loss or gradient norm is NaN or infinite (raised before the update is applied)."""

    def __init__(self, step: int, what: str):
        super().__init__(f"non-finite {what} at step {step}")
        self.step = step


class TrainingStopped(UserError, RuntimeError):
    """A run ended by a fault; the one-line message names the step and the last good checkpoint."""


class NonFiniteGuard:
    """Trainer mixin (listed before the Trainer class): checks every optimizer step's losses and gradients.

    The check runs after the last micro-batch's backward (gradients complete and, under DDP, already averaged,
    so every process decides alike), before the Trainer clips and steps. Under a GradScaler (fp16) overflowing
    gradients are routine and the scaler skips those steps itself, so only the loss is checked there. DeepSpeed
    steps inside the backward pass: there a non-finite loss still stops the run before the next save.
    """

    def __init__(self, *args: Any, on_nonfinite: str = "stop", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if on_nonfinite == "skip" and self.is_deepspeed_enabled:
            raise ConfigError("config key 'on_nonfinite': skip cannot work under DeepSpeed, which applies each update "
                              "inside the backward pass, before the check; use stop")
        self.on_nonfinite = on_nonfinite
        self.skipped_steps: list[int] = []  # steps whose update was dropped, in this call
        self._losses_finite: Optional[torch.Tensor] = None  # on the device: no sync per micro-batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss)
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        if self.accelerator.sync_gradients:  # the optimizer step's last micro-batch
            self._check_update(model)
        return loss

    def _check_update(self, model) -> None:
        losses_finite, self._losses_finite = bool(self._losses_finite), None
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grads_finite = self.accelerator.scaler is not None or not grads or bool(torch.isfinite(_total_norm(grads)))
        if losses_finite and grads_finite:
            return
        step = self.state.global_step + 1  # the step being computed, as the Trainer numbers steps and checkpoints
        what = "gradient norm" if losses_finite else "loss"
        if self.on_nonfinite == "stop":
            raise NonFiniteStep(step, what)
        self.skipped_steps.append(step)
        if self.accelerator.scaler is None:
            model.zero_grad(set_to_none=True)  # the optimizer leaves parameters without a gradient untouched
        else:
            for grad in grads:  # the scaler skips a step whose gradients are not finite (and needs them to decide)
                grad.fill_(float("nan"))


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.get_total_norm(grads)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm  # FSDP2: each process holds a shard


class SaveTracker(TrainerCallback):
    """Knows which folder the run is writing, for the fault report, and invalidates a checkpoint folder that
    is about to be written again. Runs after the Trainer's own flow callback, which decides `should_save`."""

    def __init__(self) -> None:
        self.writing: Optional[Path] = None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.writing = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if args.should_save:
                (self.writing / STATE_FILE).unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        self.writing = None

    def on_train_end(self, args, state, control, **kwargs):
        self.writing = Path(args.output_dir)  # from here on the run writes its final folder


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether `err`, raised while writing into `folder`, comes from a full disk (or an exhausted quota)."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or f"os error {errno.ENOSPC}" in str(err):
        return True  # Python's own writes, and safetensors' (its error type carries the OS error in the text)
    # torch.save's zip writer reports a failed write as a bare RuntimeError that names no cause.
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return type(err) is RuntimeError and shutil.disk_usage(existing).free < FULL_DISK_BYTES


def check_some_step_counted(ran: int, skipped: list[int], output_dir: str) -> None:
    """A run whose every step was dropped as non-finite (`on_nonfinite` skip) trained nothing: it must not end as
    a success with an untrained model saved as its result."""
    if ran and len(skipped) >= ran:
        raise TrainingStopped(f"training stopped: all {ran} steps of this run had a non-finite loss or gradient "
                              f"norm and were skipped, so nothing was trained and no model was saved in {output_dir}")


def _last_good(output_dir: Path) -> str:
    complete = complete_checkpoints(output_dir)
    return f"last good checkpoint: {complete[-1]}" if complete else "no checkpoint written yet"


def stop_report(err: Exception, output_dir: str | Path, step: int, writing: Optional[Path],
                saves: bool) -> Optional[TrainingStopped]:
    """The one-line error for a fault that ended training at `step` while `writing` that folder (None: no save
    was under way), or None when `err` is no such fault. A partial checkpoint left by a full disk is removed by
    the process that `saves`."""
    output_dir = Path(output_dir)
    if isinstance(err, NonFiniteStep):
        return TrainingStopped(f"training stopped: {err}; {_last_good(output_dir)}")
    if writing is None or not disk_full(err, writing):
        return None
    if writing != output_dir and saves:
        shutil.rmtree(writing, ignore_errors=True)  # frees its space; resuming would never take it
    return TrainingStopped(f"training stopped: disk full while saving {writing} at step {step}; "
                           f"{_last_good(output_dir)}")
