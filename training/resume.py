"""What a resumed run may change: a run's checkpoints belong to the settings and data that made them.

Every run writes `run_identity.json` into its output folder (its resolved config and a hash of its data files)
before it trains. `--resume` compares the new config and data with it, key by key:
- settings that decide what the weights are (model, data, lengths, batch, precision, LoRA, render, seed...) must
  be the same: a difference is refused in one line naming the key, since continuing would mix two runs;
- the schedule (learning rate, weight decay, warm-up, scheduler, clipping, steps, epochs) may change: the new
  values are applied from the resumed step on and said in one line (`Resumable` puts them into the restored
  optimizer and scheduler);
- bookkeeping (logging, saving, evaluation interval, hub, export, kernels, generation) changes nothing trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from config import RENDER_CONFIG_FILE, TrainingConfig, flat_items, to_dict
from data.jsonl import file_digest, read_json_object, write_json_atomic
from training.run_outputs import OutputDirError

RUN_IDENTITY_FILE = "run_identity.json"
# Applied from the resumed step on (the Trainer reads them from its arguments, ResumeSchedule from the optimizer).
SCHEDULE_KEYS = ("optimizer.learning_rate", "optimizer.weight_decay", "optimizer.warmup_steps",
                 "optimizer.lr_scheduler", "optimizer.max_grad_norm", "max_steps", "num_epochs", "on_nonfinite")
# Change nothing that is trained. Data files are named by path here and identified by their content below, so a
# prepared dataset that moved resumes.
BOOKKEEPING_KEYS = ("output_dir", "train_file", "val_file", "log_interval", "save_interval", "eval_steps",
                    "save_total_limit", "report_to", "push_to_hub", "hub_model_id", "hub_private", "export_dir",
                    "export_dtype", "vision_cache", "gradient_checkpointing", "load.device",
                    "load.attn_implementation", "load.experts_implementation", "generation")


class ResumeRefused(OutputDirError):
    """A resume with a setting or data that differs from the checkpoint's run; one line for the user."""


def data_identity(cfg: TrainingConfig) -> dict[str, Optional[str]]:
    """Content hashes of the local data files (and of the render settings saved beside them); a hub dataset is
    identified by its name and splits, which are config keys."""
    identity: dict[str, Optional[str]] = {}
    for name, file in (("train", cfg.train_file), ("val", cfg.val_file)):
        if not file:
            continue
        path = Path(file)
        identity[name] = file_digest(path) if path.is_file() else None
        settings = path.parent / RENDER_CONFIG_FILE  # the render settings of its page images
        identity[f"{name}_render"] = file_digest(settings) if settings.is_file() else None
    return identity


def run_identity(cfg: TrainingConfig) -> dict[str, Any]:
    return {"config": to_dict(cfg), "data": data_identity(cfg)}


def _under(key: str, names: tuple[str, ...]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in names)


def resume_changes(saved: dict[str, Any], cfg: TrainingConfig) -> list[str]:
    """The schedule settings that differ from the run's saved identity, as "key old -> new"; raises ResumeRefused
    on any difference that would continue the checkpoints with other weights-deciding settings or data."""
    before, now = dict(flat_items(saved.get("config", {}))), dict(flat_items(to_dict(cfg)))
    data_before, data_now = saved.get("data", {}), data_identity(cfg)
    for name in sorted(set(data_before) | set(data_now)):
        if data_before.get(name) != data_now.get(name):
            what = "render settings of the " + name.split("_")[0] if name.endswith("_render") else name
            raise ResumeRefused(f"cannot resume {cfg.output_dir}: the {what} data differs from the data its "
                                "checkpoints were trained on; use --overwrite to start again, or the same data")
    changes = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new or _under(key, BOOKKEEPING_KEYS):
            continue
        if not _under(key, SCHEDULE_KEYS):
            raise ResumeRefused(f"cannot resume {cfg.output_dir} with config key '{key}' {new!r}: its checkpoints "
                                f"were trained with {old!r}; use --overwrite to start again, or the same setting")
        changes.append(f"{key} {old} -> {new}")
    return changes


def check_resume(cfg: TrainingConfig, checkpoint: str) -> list[str]:
    """`resume_changes` against the identity saved in the checkpoint's run folder; a run written before identities
    were saved cannot be checked and says so."""
    saved = read_json_object(Path(checkpoint).parent / RUN_IDENTITY_FILE)
    if not saved:
        print(f"note: {Path(checkpoint).parent} has no {RUN_IDENTITY_FILE}; its settings cannot be compared with "
              "these", flush=True)
        return []
    return resume_changes(saved, cfg)


def save_run_identity(cfg: TrainingConfig) -> None:
    write_json_atomic(Path(cfg.output_dir) / RUN_IDENTITY_FILE, run_identity(cfg))


class Resumable:
    """Trainer mixin for what transformers' resume gets wrong when a run continues with other settings or at its
    end (both private methods of the pinned transformers version; tests/training/test_resume.py checks both).

    After a checkpoint's optimizer and scheduler state is restored, its learning rate and weight decay are replaced
    by this run's: transformers keeps the saved ones, which would silently ignore a change. The scheduler's step
    count and the optimizer's moments are kept; its lambdas already follow this run's warm-up, schedule and length,
    as the Trainer built them from its arguments. And a checkpoint at or past `max_steps` trains nothing: the
    Trainer checks the limit only after a step, so it would train one step past a checkpoint saved at the end of
    a run whose last step is not at an epoch's end."""

    def _load_optimizer_and_scheduler(self, checkpoint: Optional[str]) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.is_deepspeed_enabled:  # DeepSpeed restores its own schedule
            return
        scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        if not hasattr(scheduler, "lr_lambdas"):
            return
        groups = self.optimizer.param_groups
        for group in groups:
            group["initial_lr"] = self.args.learning_rate
            if group.get("weight_decay"):  # the Trainer's no-decay group (biases, norms) keeps 0
                group["weight_decay"] = self.args.weight_decay
        scheduler.base_lrs = [self.args.learning_rate] * len(groups)
        for group, factor in zip(groups, scheduler.lr_lambdas):
            group["lr"] = self.args.learning_rate * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in groups]

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)
