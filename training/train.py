"""The train CLI: DeepSeek-OCR on page images (task deepseek-ocr, the default for DeepSeek-OCR models; the
reference README spells it `--use-deepseek-ocr`) or a seq2seq baseline on the text (task seq2seq).

    python -m training.train --use-deepseek-ocr --train prepared_data/train.jsonl --val prepared_data/val.jsonl
    python -m training.train --train prepared_data/train.jsonl --model-name facebook/bart-base --output ./baseline
    python -m training.train --config config.json --use-deepseek-ocr --resume

Flags override the JSON config; the resolved configuration is saved with the run (never the hub token). Without
--train/--val and --hf-dataset, the default outputs of `python -m data.prepare_datasets` are used
(prepared_data/train.jsonl, val.jsonl). Bad input ends with one `error:` line and exit status 2. Multi-GPU:
`accelerate launch -m training.train ...` or `torchrun --nproc_per_node N -m training.train ...` (see
training/README.md).

The command is a thin wrapper of `train(config)`, which the experiment runner calls directly.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from config import (
    TRAINING_CONFIG_FILE,
    ConfigError,
    TrainingConfig,
    UserError,
    apply_overrides,
    first_line,
    load_json,
    save_json,
)
from config.cli import Parser, add_settings_arguments, apply_flags, run_command

# transformers 5.x puts TensorBoard logs in ./runs of the working directory unless this is set; a user's own
# setting wins, otherwise each run logs under <output>/runs.
USER_TENSORBOARD_DIR = os.environ.get("TENSORBOARD_LOGGING_DIR")


class HubError(UserError, RuntimeError):
    """A hub step (creating the repository, uploading) that failed; the message names the step."""


@dataclass
class TrainResult:
    """What a finished run reports; the model folder (`output_dir`) holds the rest."""

    output_dir: str
    steps: int  # optimizer steps of the run, those before a resumed checkpoint included
    step_seconds: Optional[float]  # the Trainer's train_runtime over the steps this call ran (None: it ran none)
    train_seconds: float  # the Trainer's train_runtime: this call's training loop, without loading
    val_losses: list[tuple[int, float]]  # (step, eval_loss) of every validation, in order
    truncated_sources: Optional[int]  # DeepSeek-OCR: documents / summaries cut to max_source_length / max_length
    truncated_targets: Optional[int]  # over the run's steps (this process's); None for the seq2seq baseline
    context: Optional[int]  # DeepSeek-OCR: the decoder's context (max_position_embeddings); None for seq2seq
    over_context: Optional[dict[str, int]]  # DeepSeek-OCR: records left out as longer than it, by split ("train",
    # "val"); None for the seq2seq baseline (training/context.py)
    metrics: dict[str, Any]  # the final evaluation (empty without validation data)
    skipped_steps: list[int]  # on_nonfinite "skip": this call's steps with a non-finite loss or gradient norm


def build_parser() -> Parser:
    parser = Parser(prog="python -m training.train", config_file="config",
                    description="Fine-tune DeepSeek-OCR (page images -> summary) or a seq2seq baseline (text -> "
                                "summary). Flags override the --config file; every setting of the JSON format has a "
                                "flag.")
    run = parser.add_argument_group("run")
    run.add_argument("--config", metavar="FILE", help="JSON training config (README format)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue from the latest complete checkpoint in --output, or from CHECKPOINT")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --output (and an --export "
                     "folder)")
    run.add_argument("--dry-run", action="store_true", help="check config, data and model, then stop")
    run.add_argument("--hub-token", metavar="TOKEN", help="hub write token (default: $HF_TOKEN); never saved")
    add_settings_arguments(parser, TrainingConfig)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainingConfig:
    """The config file (or defaults) with the given flags on top."""
    cfg = load_json(TrainingConfig, args.config) if args.config else TrainingConfig()
    return apply_flags(build_parser(), cfg, args)


def resolve_task(cfg: TrainingConfig) -> TrainingConfig:
    """`cfg` with its task decided: as given, else from the model (DeepSeek-OCR models -> deepseek-ocr)."""
    from model.checkpoint.source import resolve_model_source

    source = resolve_model_source(cfg.model_name)
    task = cfg.task or ("deepseek-ocr" if source.has_backbone else "seq2seq")
    if task == "seq2seq" and source.has_backbone:
        raise ConfigError(f"{cfg.model_name} is a DeepSeek-OCR model: it trains with task deepseek-ocr; the seq2seq "
                          "baseline needs a seq2seq model such as facebook/bart-base")
    if task == "deepseek-ocr" and not source.has_backbone:
        raise ConfigError(f"{cfg.model_name} is not a DeepSeek-OCR model; use task seq2seq for it, or a DeepSeek-OCR "
                          "model (deepseek-ai/DeepSeek-OCR, tiny-random, a folder trained here)")
    return apply_overrides(cfg, {"task": task})


def check_export(cfg: TrainingConfig) -> None:
    if cfg.export_dir and cfg.task != "deepseek-ocr":
        raise ConfigError("config key 'export_dir' needs task deepseek-ocr: the official layout is DeepSeek-OCR's")
    if cfg.export_dir and Path(cfg.export_dir).resolve() == Path(cfg.output_dir).resolve():
        raise ConfigError("config key 'export_dir' must be another folder than the output folder")


def _use_hub_token(hub_token: Optional[str]) -> Optional[str]:
    """The token (given, else $HF_TOKEN). The hub client reads it from the environment; it never enters the
    config or the Trainer's arguments, which are saved (pickled into every checkpoint)."""
    token = hub_token or os.environ.get("HF_TOKEN")
    if token:
        os.environ["HF_TOKEN"] = token
    return token


def _checked(config: TrainingConfig, hub_token: Optional[str]) -> tuple[TrainingConfig, list[dict], list[dict]]:
    """The config with its task and data decided, and its (train, val) records, all checked before a model loads."""
    from training.data import load_training_records, with_prepared_defaults

    cfg = with_prepared_defaults(resolve_task(config))
    check_export(cfg)
    train, val = load_training_records(cfg, _use_hub_token(hub_token))
    return cfg, train, val


def dry_run(config: TrainingConfig, *, hub_token: Optional[str] = None) -> str:
    """Check the config, the data and the model, and describe them; nothing is written."""
    cfg, train, val = _checked(config, hub_token)
    lines = [f"configuration ok: {len(train)} training and {len(val)} validation records, output {cfg.output_dir}"]
    if cfg.task == "deepseek-ocr":
        from training.deepseek_trainer import dry_run_report

        lines.append(dry_run_report(cfg))
    else:
        from model.checkpoint.load import load_seq2seq
        from model.checkpoint.source import resolve_model_source
        from training.trainer import check_positions

        _, model = load_seq2seq(resolve_model_source(cfg.model_name))
        check_positions(cfg, model.config)
        lines.append(f"model {cfg.model_name}: {model.config.model_type}, {model.num_parameters():,} parameters")
    return "\n".join(lines)


def build_trainer(cfg: TrainingConfig, train: list[dict], val: list[dict], callbacks: list) -> Any:
    from training.arguments import training_arguments

    args = training_arguments(cfg, evaluate=bool(val))
    if cfg.task == "deepseek-ocr":
        from training.deepseek_trainer import DeepSeekOCRTrainer

        return DeepSeekOCRTrainer.from_config(cfg, train, val or None, args=args, callbacks=callbacks)
    from training.trainer import SummarizationTrainer

    return SummarizationTrainer.from_config(cfg, train, val or None, args=args, callbacks=callbacks)


def final_metrics(trainer: Any, has_val: bool) -> dict[str, Any]:
    """The evaluation at the last step: reused when training just ran it, otherwise run now."""
    if not has_val:
        return {}
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is None or last.get("step") != trainer.state.global_step:
        last = trainer.evaluate()
    return {k: v for k, v in last.items() if k.startswith("eval_") and not k.endswith(("_per_second", "runtime"))}


def trained_counts(trainer: Any) -> dict[str, Any]:
    """The records the run trained and validated on, and (DeepSeek-OCR) those left out as longer than the
    decoder's context, for the model card."""
    counts: dict[str, Any] = {"train": len(trainer.train_dataset), "val": len(trainer.eval_dataset or [])}
    if getattr(trainer, "context", None) is not None:
        counts.update(context=trainer.context, over_context=trainer.over_context)
    return counts


def finish(trainer: Any, cfg: TrainingConfig, counts: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Main process: loss plot, model card, and the upload of the final folder when pushing to the hub."""
    from training.run_outputs import CARD_FILE, PLOT_FILE, plot_losses, write_model_card

    out = Path(cfg.output_dir)
    plot_losses(trainer.state.log_history, out / PLOT_FILE)
    write_model_card(out, cfg, counts, metrics)
    print(f"saved model to {out} (model card {CARD_FILE}, loss curves {PLOT_FILE})", flush=True)
    if cfg.push_to_hub:
        from huggingface_hub import HfApi

        try:
            # Our own upload, not Trainer.push_to_hub, which would replace the model card with its generic one.
            HfApi().upload_folder(repo_id=cfg.hub_model_id, folder_path=str(out), commit_message="final model",
                                  ignore_patterns=["checkpoint-*", "_*"])
        except Exception as err:  # the trained folder is complete on disk; only the upload is missing
            raise HubError(f"uploading {out} to the hub repository {cfg.hub_model_id!r} failed: {first_line(err)}; "
                           "the model is saved locally") from None
        print(f"pushed to https://huggingface.co/{cfg.hub_model_id}", flush=True)


def create_hub_repo(cfg: TrainingConfig) -> None:
    """Created before training, so a hub problem (offline, no token, no rights) stops the run at once, named."""
    from huggingface_hub import create_repo

    try:
        create_repo(cfg.hub_model_id, private=cfg.hub_private, exist_ok=True)
    except Exception as err:
        raise HubError(f"creating the hub repository {cfg.hub_model_id!r} failed: {first_line(err)}") from None


def train(config: TrainingConfig, *, resume: Optional[str] = None, overwrite: bool = False,
          hub_token: Optional[str] = None) -> TrainResult:
    """Train as `config` says (its task and data decided here when unset) and save the model folder.

    `resume`: "latest" (the latest complete checkpoint in the output folder, if any) or a checkpoint folder;
    `overwrite` replaces a run already in the output (and export) folder; `hub_token` (default: $HF_TOKEN) is
    for pushing and hub datasets and is never saved or printed. A non-finite step (`on_nonfinite` stop) or a full
    disk while saving raises `training.faults.TrainingStopped`, whose one line names the step and the last good
    checkpoint.
    """
    from training.resume import check_resume, save_run_identity
    from training.run_outputs import checkpoint_step, prepare_output_dir, resolve_checkpoint

    cfg, train_records, val_records = _checked(config, hub_token)
    prepare_output_dir(cfg.output_dir, overwrite=overwrite, resume=resume)
    if cfg.export_dir:  # a busy export folder is refused now, not after the training
        from model.checkpoint.export import check_output

        check_output(Path(cfg.export_dir), overwrite=overwrite)
    if cfg.push_to_hub:
        create_hub_repo(cfg)
    checkpoint = resolve_checkpoint(cfg.output_dir, resume) if resume else None
    if resume and checkpoint is None:
        print(f"no complete checkpoint in {cfg.output_dir} yet: starting from the beginning", flush=True)
    changes = check_resume(cfg, checkpoint) if checkpoint else []
    if changes:
        print(f"resuming with changed settings, applied from step {checkpoint_step(Path(checkpoint))} on: "
              + "; ".join(changes), flush=True)

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from training.callbacks import TrainingProgress
    from training.faults import SaveTracker, check_some_step_counted, stop_report

    os.environ["TENSORBOARD_LOGGING_DIR"] = USER_TENSORBOARD_DIR or str(Path(cfg.output_dir) / "runs")
    progress, saves = TrainingProgress(), SaveTracker()
    trainer = build_trainer(cfg, train_records, val_records, [progress, saves])
    over_context = getattr(trainer, "over_context", None)  # DeepSeek-OCR only
    if over_context and any(over_context.values()) and trainer.is_world_process_zero():
        from training.context import over_context_line

        print(over_context_line(over_context, {"train": len(train_records), "val": len(val_records)},
                                trainer.context, cfg.max_length), flush=True)
    for default in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(default)
    if trainer.is_world_process_zero():
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_json(cfg, Path(cfg.output_dir) / TRAINING_CONFIG_FILE)
        save_run_identity(cfg)
    # Read now: the checkpoint may be rotated away (save_total_limit) by the time training ends.
    started_at = checkpoint_step(Path(checkpoint)) if checkpoint else 0
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
        check_some_step_counted(trainer.state.global_step - started_at, trainer.skipped_steps, cfg.output_dir)
        trainer.save_model()
        metrics = final_metrics(trainer, bool(val_records))
        if trainer.is_world_process_zero():
            trainer.save_state()
            finish(trainer, cfg, trained_counts(trainer), metrics)
    except Exception as err:
        progress.close()
        stopped = stop_report(err, cfg.output_dir, trainer.state.global_step, saves.writing, trainer.args.should_save)
        if stopped is None:
            raise
        raise stopped from None
    if trainer.skipped_steps and trainer.is_world_process_zero():
        print(f"skipped {len(trainer.skipped_steps)} step(s) with a non-finite loss or gradient norm, their updates "
              f"not applied: steps {', '.join(map(str, trainer.skipped_steps))}", flush=True)
    if cfg.export_dir and trainer.is_world_process_zero():
        from model.checkpoint.export import export_model

        export_model(cfg.output_dir, cfg.export_dir, cfg.export_dtype, overwrite=overwrite)
        print(f"exported the official layout ({cfg.export_dtype}) to {cfg.export_dir}", flush=True)
    steps = trainer.state.global_step
    ran = steps - started_at
    seconds = output.metrics["train_runtime"]
    ocr = cfg.task == "deepseek-ocr"
    return TrainResult(
        output_dir=cfg.output_dir, steps=steps, step_seconds=seconds / ran if ran else None, train_seconds=seconds,
        val_losses=[(h["step"], h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h],
        truncated_sources=trainer.truncated_sources if ocr else None,
        truncated_targets=trainer.truncated_targets if ocr else None, context=trainer.context if ocr else None,
        over_context=dict(over_context) if ocr else None, metrics=metrics, skipped_steps=list(trainer.skipped_steps))


def main(argv: Optional[list[str]] = None) -> int:
    def command(args: argparse.Namespace) -> None:
        cfg = resolve_config(args)
        if args.dry_run:
            print(dry_run(cfg, hub_token=args.hub_token))
        else:
            train(cfg, resume=args.resume, overwrite=args.overwrite, hub_token=args.hub_token)
            end_process_group()

    return run_command(build_parser(), command, argv)


def end_process_group() -> None:
    """Under torchrun, free the process group while the interpreter is whole. A group still referenced at exit (by
    a DDP reducer in a reference cycle of the trainer) is torn down during interpreter finalization, where gloo's
    threads abort a finished process ("terminate called without an active exception", seen twice in
    test_ddp.py): so the cycles are collected, then the group is destroyed. No barrier: rank 0 may still be
    exporting or uploading, alone, for longer than a collective waits."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
