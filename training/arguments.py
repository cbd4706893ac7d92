"""The one mapping from `TrainingConfig` to transformers' `Seq2SeqTrainingArguments`.

The hub token is deliberately not a parameter: the Trainer pickles its arguments into every checkpoint
(`training_args.bin`), so a token placed there would be saved. The CLI hands it to the hub client through the
process environment (`HF_TOKEN`) instead.
"""
from __future__ import annotations

import os
from typing import Any

from transformers import Seq2SeqTrainingArguments

from config import ConfigError, TrainingConfig


def training_device(cfg: TrainingConfig) -> str:
    """"cuda" or "cpu": where the Trainer runs. `load.device` cpu forces the CPU; unset, CUDA when available.

    The Trainer (accelerate) places the model itself, one GPU per process, so a numbered GPU is not a setting here:
    CUDA_VISIBLE_DEVICES picks the GPUs.
    """
    from model.checkpoint.device import resolve_device

    if cfg.load.device not in (None, "auto", "cpu", "cuda"):
        raise ConfigError(f"config key 'load.device': training takes cpu or cuda (one GPU per process; choose them "
                          f"with CUDA_VISIBLE_DEVICES), got {cfg.load.device!r}")
    return resolve_device(cfg.load.device).type


def precision_flags(mixed_precision: str, device: str) -> dict[str, bool]:
    """The Trainer's bf16/fp16 flags for a `mixed_precision` setting on `device`, by the one rule of
    model/checkpoint/device.py in its training case (float32 on a CPU)."""
    import torch

    from model.checkpoint.device import resolve_precision

    try:
        dtype = resolve_precision(mixed_precision, device, training=True)
    except ValueError as err:
        raise ConfigError(f"config key 'mixed_precision': {err}") from None
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def training_arguments(cfg: TrainingConfig, *, evaluate: bool = True, **overrides: Any) -> Seq2SeqTrainingArguments:
    """Trainer arguments for `cfg`; `evaluate=False` when there is no validation data; `overrides` win."""
    device = training_device(cfg)
    report_to = [] if cfg.report_to == "none" else [r.strip() for r in cfg.report_to.split(",") if r.strip()]
    if not evaluate:
        eval_strategy = "no"
    else:
        eval_strategy = "epoch" if cfg.eval_steps is None else "steps"
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.optimizer.learning_rate,
        weight_decay=cfg.optimizer.weight_decay,
        warmup_steps=cfg.optimizer.warmup_steps,
        lr_scheduler_type=cfg.optimizer.lr_scheduler,
        max_grad_norm=cfg.optimizer.max_grad_norm,
        **precision_flags(cfg.mixed_precision, device),
        activation_checkpointing=cfg.gradient_checkpointing,  # 5.x name of gradient_checkpointing
        logging_strategy="steps",
        logging_steps=cfg.log_interval,
        save_strategy="steps",
        save_steps=cfg.save_interval,
        save_total_limit=cfg.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps,
        report_to=report_to,
        seed=cfg.seed,
        data_seed=cfg.seed,
        push_to_hub=cfg.push_to_hub,
        hub_model_id=cfg.hub_model_id,
        hub_private_repo=cfg.hub_private,
        # The DeepSeek collator needs `images`/`render`, which the model's forward does not name.
        remove_unused_columns=cfg.task != "deepseek-ocr",
        # The seq2seq baseline scores ROUGE on generated text; DeepSeek-OCR's evaluation reports the loss only
        # (ROUGE for it comes from evaluation.generate + evaluation.evaluate).
        predict_with_generate=cfg.task != "deepseek-ocr",
        # Throughput counts real tokens; for DeepSeek the image placeholders are part of input_ids.
        include_num_input_tokens_seen="non_padding",
        # Pinning is a CUDA transfer optimisation; on a CPU it only warns.
        dataloader_pin_memory=device == "cuda",
        # load.device cpu keeps the Trainer off a GPU; without CUDA, accelerate also needs it to form a (gloo)
        # process group under torchrun.
        use_cpu=cfg.load.device == "cpu" or (device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1),
        # Our own progress bar (training.callbacks) replaces the Trainer's tqdm bar and log printer.
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return Seq2SeqTrainingArguments(**kwargs)
