"""The train CLI: DeepSeek-OCR on page images (`--use-deepseek-ocr`) or a seq2seq baseline on the text.

    python -m training.train --use-deepseek-ocr --train prepared_data/train.jsonl --val prepared_data/val.jsonl
    python -m training.train --train prepared_data/train.jsonl --model-name facebook/bart-base --output ./baseline
    python -m training.train --config config.json --use-deepseek-ocr --resume

Flags override the JSON config; the resolved configuration is saved with the run (never the hub token). Bad input
ends with one `error:` line and exit status 2. Multi-GPU: `accelerate launch -m training.train ...` or
`torchrun --nproc_per_node N -m training.train ...` (see training/README.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from config import (
    EXPERTS_IMPLEMENTATIONS,
    TRAINING_CONFIG_FILE,
    ConfigError,
    TrainingConfig,
    apply_overrides,
    load_json,
    save_json,
)

DEFAULT_MODEL = TrainingConfig().model_name
# transformers 5.x puts TensorBoard logs in ./runs of the working directory unless this is set; a user's own
# setting wins, otherwise each run logs under <output>/runs.
USER_TENSORBOARD_DIR = os.environ.get("TENSORBOARD_LOGGING_DIR")
# CLI flag destination -> dotted config key; None values (flags not given) leave the config file's value.
FLAG_KEYS = {
    "use_deepseek_ocr": "use_deepseek_ocr", "model_name": "model_name", "lora": "lora.enabled",
    "train_projector": "train_projector", "mode": "render.mode", "vision_cache": "vision_cache",
    "train": "train_file", "val": "val_file", "hf_dataset": "hf_dataset", "hf_train_split": "hf_train_split",
    "hf_val_split": "hf_val_split", "max_train_samples": "max_train_samples", "max_eval_samples": "max_eval_samples",
    "output": "output_dir", "batch_size": "batch_size", "num_epochs": "num_epochs", "max_steps": "max_steps",
    "learning_rate": "optimizer.learning_rate", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "eval_steps": "eval_steps", "seed": "seed", "report_to": "report_to", "push_to_hub": "push_to_hub",
    "hub_model_id": "hub_model_id", "experts_implementation": "experts_implementation",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, like every other bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m training.train", description="Fine-tune DeepSeek-OCR (or a seq2seq "
                     "baseline) to summarize documents. Flags override the --config file.")
    flag = {"action": "store_true", "default": None}  # None: not given, keep the config's value
    model = parser.add_argument_group("model")
    model.add_argument("--use-deepseek-ocr", **flag, help="train DeepSeek-OCR on page images (default: the "
                       "seq2seq baseline on the text)")
    model.add_argument("--model-name", metavar="ID_OR_PATH", help=f"hub id or local folder (default: {DEFAULT_MODEL})")
    model.add_argument("--config", metavar="FILE", help="JSON training config (README format)")
    model.add_argument("--lora", **flag, help="DeepSeek-OCR: train LoRA adapters instead of the full decoder")
    model.add_argument("--train-projector", **flag, help="DeepSeek-OCR: also train the vision projector")
    model.add_argument("--mode", help="DeepSeek-OCR render mode: tiny, small, base, large, gundam or page")
    model.add_argument("--vision-cache", choices=["none", "memory", "disk"],
                       help="DeepSeek-OCR: cache frozen-encoder outputs (default: none)")
    model.add_argument("--experts-implementation", choices=EXPERTS_IMPLEMENTATIONS,
                       help="DeepSeek-OCR: MoE experts kernels (default: grouped_mm where it dispatches, else eager)")
    data = parser.add_argument_group("data")
    data.add_argument("--train", metavar="FILE", help="prepared training JSONL (python -m data.prepare_datasets)")
    data.add_argument("--val", metavar="FILE", help="prepared validation JSONL")
    data.add_argument("--hf-dataset", metavar="ID", help="hub dataset instead of local files (streamed)")
    data.add_argument("--hf-train-split", metavar="SPLIT", help="hub training split (default: train)")
    data.add_argument("--hf-val-split", metavar="SPLIT", help="hub validation split (default: validation)")
    data.add_argument("--max-train-samples", type=int, metavar="N", help="use at most N training records")
    data.add_argument("--max-eval-samples", type=int, metavar="N", help="use at most N validation records")
    run = parser.add_argument_group("training run")
    run.add_argument("--output", metavar="DIR", help="output folder (default: ./deepseek-summarizer)")
    run.add_argument("--batch-size", type=int, metavar="N", help="per-device batch size")
    run.add_argument("--num-epochs", type=int, metavar="N")
    run.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps; overrides --num-epochs")
    run.add_argument("--learning-rate", type=float, metavar="LR")
    run.add_argument("--gradient-accumulation-steps", type=int, metavar="N")
    run.add_argument("--eval-steps", type=int, metavar="N", help="evaluate every N steps (default: every epoch)")
    run.add_argument("--seed", type=int)
    run.add_argument("--report-to", metavar="TRACKER", help="tensorboard (default), wandb, ... or none")
    run.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue from the latest complete checkpoint in --output, or from CHECKPOINT")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --output")
    run.add_argument("--dry-run", action="store_true", help="check config, data and model, then stop")
    hub = parser.add_argument_group("hugging face hub")
    hub.add_argument("--push-to-hub", **flag, help="upload checkpoints and the final model")
    hub.add_argument("--hub-model-id", metavar="USER/NAME")
    hub.add_argument("--hub-token", metavar="TOKEN", help="write token (default: $HF_TOKEN); never saved")
    return parser


def resolve_config(args: argparse.Namespace) -> TrainingConfig:
    """The config file (or defaults) with the given flags on top, validated."""
    cfg = load_json(TrainingConfig, args.config) if args.config else TrainingConfig()
    return apply_overrides(cfg, {key: getattr(args, dest) for dest, key in FLAG_KEYS.items()})


def _check_choices(cfg: TrainingConfig) -> None:
    if not cfg.use_deepseek_ocr and cfg.model_name == DEFAULT_MODEL:
        raise ConfigError(f"{DEFAULT_MODEL} needs --use-deepseek-ocr; the seq2seq baseline needs a seq2seq "
                          "--model-name such as facebook/bart-base")
    for key in ("max_train_samples", "max_eval_samples"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {getattr(cfg, key)}")


def build_trainer(cfg: TrainingConfig, train: list[dict], val: list[dict], callbacks: list) -> Any:
    from training.arguments import training_arguments

    args = training_arguments(cfg, evaluate=bool(val))
    if cfg.use_deepseek_ocr:
        from training.deepseek_trainer import DeepSeekOCRTrainer
        from training.trainer import ModelLoadError

        try:
            return DeepSeekOCRTrainer.from_config(cfg, train, val or None, args=args, callbacks=callbacks)
        except OSError as err:  # hub/offline/missing-folder failures of from_pretrained
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelLoadError(f"cannot load DeepSeek-OCR model {cfg.model_name!r}: {first}") from None
    from training.trainer import SummarizationTrainer

    return SummarizationTrainer.from_config(cfg, train, val or None, args=args, callbacks=callbacks)


def dry_run(cfg: TrainingConfig, train: list[dict], val: list[dict]) -> None:
    print(f"configuration ok: {len(train)} training and {len(val)} validation records, output {cfg.output_dir}")
    if cfg.use_deepseek_ocr:
        from training.deepseek_trainer import dry_run_report

        print(dry_run_report(cfg))
    else:
        from training.trainer import load_seq2seq

        _, model = load_seq2seq(cfg.model_name)
        print(f"model {cfg.model_name}: {model.config.model_type}, {model.num_parameters():,} parameters")


def final_metrics(trainer: Any, has_val: bool) -> dict[str, Any]:
    """The evaluation at the last step: reused when training just ran it, otherwise run now."""
    if not has_val:
        return {}
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is None or last.get("step") != trainer.state.global_step:
        last = trainer.evaluate()
    return {k: v for k, v in last.items() if k.startswith("eval_") and not k.endswith(("_per_second", "runtime"))}


def finish(trainer: Any, cfg: TrainingConfig, counts: dict[str, int], metrics: dict[str, Any]) -> None:
    """Main process: loss plot, model card, and the upload of the final folder when pushing to the hub."""
    from training.run_outputs import CARD_FILE, PLOT_FILE, plot_losses, write_model_card

    out = Path(cfg.output_dir)
    plot_losses(trainer.state.log_history, out / PLOT_FILE)
    write_model_card(out, cfg, counts, metrics)
    print(f"saved model to {out} (model card {CARD_FILE}, loss curves {PLOT_FILE})", flush=True)
    if cfg.push_to_hub:
        from huggingface_hub import HfApi

        # Our own upload, not Trainer.push_to_hub, which would replace the model card with its generic one.
        HfApi().upload_folder(repo_id=cfg.hub_model_id, folder_path=str(out), commit_message="final model",
                              ignore_patterns=["checkpoint-*", "_*"])
        print(f"pushed to https://huggingface.co/{cfg.hub_model_id}", flush=True)


def run(args: argparse.Namespace) -> Optional[Any]:
    """Train as `args` say; returns the trainer (None for --dry-run)."""
    from training.data import load_training_records
    from training.run_outputs import prepare_output_dir, resolve_checkpoint

    cfg = resolve_config(args)
    _check_choices(cfg)
    token = args.hub_token or os.environ.get("HF_TOKEN")
    if token:
        # The hub client reads it from here; it never enters the Trainer's arguments, which are pickled.
        os.environ["HF_TOKEN"] = token
    train, val = load_training_records(cfg, token)
    if args.dry_run:
        dry_run(cfg, train, val)
        return None
    prepare_output_dir(cfg.output_dir, overwrite=args.overwrite, resume=args.resume)
    checkpoint = resolve_checkpoint(cfg.output_dir, args.resume) if args.resume else None
    if args.resume and checkpoint is None:
        print(f"no complete checkpoint in {cfg.output_dir} yet: starting from the beginning", flush=True)

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from training.callbacks import TrainingProgress

    os.environ["TENSORBOARD_LOGGING_DIR"] = USER_TENSORBOARD_DIR or str(Path(cfg.output_dir) / "runs")
    trainer = build_trainer(cfg, train, val, [TrainingProgress()])
    for default in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(default)
    if trainer.is_world_process_zero():
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_json(cfg, Path(cfg.output_dir) / TRAINING_CONFIG_FILE)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = final_metrics(trainer, bool(val))
    if trainer.is_world_process_zero():
        trainer.save_state()
        finish(trainer, cfg, {"train": len(train), "val": len(val)}, metrics)
    return trainer


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (config, data, model name, output folder): reported as one line."""
    from data.dataset_loader import DatasetError
    from training.data import TrainDataError
    from training.run_outputs import OutputDirError

    errors: tuple[type[BaseException], ...] = (ConfigError, DatasetError, TrainDataError, OutputDirError)
    if "training.trainer" in sys.modules:
        errors += (sys.modules["training.trainer"].ModelLoadError,)
    return errors


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
