"""`SummarizationTrainer`: the BART/T5/PEGASUS baseline, trained on the document text itself.

It follows the conventions of transformers' summarization example (source prefix for T5, source/target lengths,
labels padded with -100, ROUGE on generated text) with two deliberate differences: ROUGE comes from the
project's one scoring function (`evaluation.metrics.evaluate_pairs`), and the decoding settings of
`cfg.generation` are written into the model's generation config, so evaluation during training, the final
evaluation and inference from the saved folder all decode the same way (transformers#13490).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from transformers import (
    DataCollatorForSeq2Seq,
    EvalPrediction,
    GenerationConfig,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from config import (
    GENERATION_SETTINGS_FILE,
    TRAINING_CONFIG_FILE,
    ConfigError,
    GenerationSettings,
    TrainingConfig,
    save_json,
    save_run_settings,
)
from evaluation.metrics import evaluate_pairs
from inference.backends import Seq2SeqBackend
from inference.loop_guard import SIZE, WINDOW, guarded
from model.checkpoint.load import load_pretrained, position_limits
from training.arguments import training_arguments
from training.faults import NonFiniteGuard
from training.resume import Resumable

logger = logging.getLogger(__name__)

T5_TYPES = {"t5", "mt5", "umt5", "longt5"}
T5_PREFIX = "summarize: "


def source_prefix(cfg: TrainingConfig, model_type: str) -> str:
    """The text put before each document: "summarize: " for T5 unless the config sets one."""
    if cfg.source_prefix is None:
        return T5_PREFIX if model_type in T5_TYPES else ""
    if model_type in T5_TYPES and cfg.source_prefix != T5_PREFIX:
        logger.warning("T5 was pre-trained with the prefix %r; training with %r instead", T5_PREFIX, cfg.source_prefix)
    return cfg.source_prefix


def apply_generation_settings(gen: GenerationConfig, settings: GenerationSettings) -> None:
    """Write the decoding settings into a model's generation config (saved with every checkpoint)."""
    for key, value in settings.generate_kwargs().items():
        setattr(gen, key, value)
    # An encoder-decoder's output starts with the decoder start token, so max_new_tokens is max_length - 1.
    # Stated as max_length only: Seq2SeqTrainer fills in a default max_length (20) after its first eval batch,
    # which would otherwise clash with max_new_tokens on every later batch and in the saved config.
    gen.max_new_tokens = None
    gen.max_length = settings.max_new_tokens + 1
    gen.min_length = 0  # checkpoints such as bart-large-cnn force long outputs; the settings decide length
    if not settings.generate_kwargs()["do_sample"]:
        gen.temperature, gen.top_p, gen.top_k = None, None, None  # greedy/beam: sampling knobs are unused
    gen._from_model_config = False  # keep the trainer from reloading it from model.config


def update_generation_settings(folder: str | Path, settings: GenerationSettings) -> None:
    """Make a trained folder decode with `settings`: its generation_settings.json, which every command here reads,
    and a seq2seq model's generation_config.json, which transformers' own `generate` reads."""
    from model.checkpoint.source import folder_kind

    folder = Path(folder)
    save_json(settings, folder / GENERATION_SETTINGS_FILE)
    if folder_kind(folder)[0] == "seq2seq":
        gen = GenerationConfig.from_pretrained(folder)
        apply_generation_settings(gen, settings)
        gen.save_pretrained(folder)


def check_positions(cfg: TrainingConfig, config: Any) -> None:
    """Refuse lengths past the model's position tables, which would otherwise stop training with an indexing error:
    sources of max_source_length tokens, targets of max_length, and summaries of max_new_tokens generated during
    evaluation (the last generated token is never fed back, so the start token costs no position)."""
    encoder, decoder = position_limits(config)
    for key, value, side, limit in (("max_source_length", cfg.max_source_length, "source", encoder),
                                    ("max_length", cfg.max_length, "summary", decoder),
                                    ("generation.max_new_tokens", cfg.generation.max_new_tokens, "summary", decoder)):
        if limit is not None and value > limit:
            raise ConfigError(f"config key '{key}' is {value}, but {cfg.model_name} reads at most {limit} {side} "
                              f"positions: set it to {limit} or less")


def tokenize_records(records: Sequence[dict], tokenizer: Any, prefix: str, cfg: TrainingConfig) -> list[dict]:
    """input_ids/attention_mask of the prefixed text and labels of the summary, truncated to the config lengths."""
    sources = tokenizer([prefix + r["text"] for r in records], max_length=cfg.max_source_length, truncation=True)
    targets = tokenizer(text_target=[r["summary"] for r in records], max_length=cfg.max_length, truncation=True)
    return [{"input_ids": ids, "attention_mask": mask, "labels": labels}
            for ids, mask, labels in zip(sources["input_ids"], sources["attention_mask"], targets["input_ids"])]


def rouge_metrics(tokenizer: Any, references: Sequence[Sequence[str]]) -> Callable[[EvalPrediction], dict]:
    """compute_metrics: ROUGE F1 x100 of generated ids against every reference of the eval records."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        ids = np.asarray(prediction.predictions)
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # -100 pads where batches were concatenated
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        texts = [t.strip() for t in texts]
        if len(texts) != len(references):
            raise ValueError(f"{len(texts)} generated summaries for {len(references)} eval records")
        scores = evaluate_pairs(texts, references, bootstrap=0, workers=1)["scores"]
        lengths = (ids != tokenizer.pad_token_id).sum(axis=1)
        return {**scores, "gen_len": float(np.mean(lengths))}

    return compute


class SummarizationTrainer(Resumable, NonFiniteGuard, Seq2SeqTrainer):
    """Seq2SeqTrainer whose saved folders also carry the run settings inference reads."""

    def __init__(self, *args: Any, training_config: Optional[TrainingConfig] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.training_config = training_config

    @classmethod
    def from_config(cls, cfg: TrainingConfig, train_dataset: Sequence[dict],
                    eval_dataset: Optional[Sequence[dict]] = None,
                    args: Optional[Seq2SeqTrainingArguments] = None, callbacks: Optional[list] = None
                    ) -> "SummarizationTrainer":
        """Load cfg.model_name, tokenize the records (`text`/`summary`) and wire ROUGE evaluation."""
        loaded = load_pretrained(cfg.model_name, dataclasses.replace(cfg.load, device="cpu", dtype="float32"))
        tokenizer, model = loaded.processor, loaded.model
        check_positions(cfg, model.config)
        prefix = source_prefix(cfg, model.config.model_type)
        apply_generation_settings(model.generation_config, cfg.generation)
        args = args or training_arguments(cfg, evaluate=bool(eval_dataset))
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100,
                                          pad_to_multiple_of=8 if args.fp16 else None)
        references = [r.get("references") or [r["summary"]] for r in eval_dataset or []]
        return cls(
            model=model,
            args=args,
            train_dataset=tokenize_records(train_dataset, tokenizer, prefix, cfg),
            eval_dataset=tokenize_records(eval_dataset, tokenizer, prefix, cfg) if eval_dataset else None,
            processing_class=tokenizer,
            data_collator=collator,
            compute_metrics=rouge_metrics(tokenizer, references) if eval_dataset else None,
            callbacks=callbacks,
            training_config=cfg,
            on_nonfinite=cfg.on_nonfinite,
        )

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """Validation summaries decode as inference's (inference/backends.py): the summary's loop guard, its window
        too, in place of transformers' own n-gram block, which has none."""
        if self.training_config is not None and not prediction_loss_only:
            settings = self.training_config.generation
            gen_kwargs = {**(gen_kwargs or getattr(self, "_gen_kwargs", {})),
                          **guarded({SIZE: settings.no_repeat_ngram_size, WINDOW: settings.no_repeat_ngram_window},
                                    Seq2SeqBackend.DECODER_START)}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """Weights, tokenizer and generation config, plus the render/generation settings and training config."""
        super().save_model(output_dir, _internal_call)
        if self.training_config is not None and self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            save_run_settings(folder, self.training_config.render, self.training_config.generation)
            save_json(self.training_config, folder / TRAINING_CONFIG_FILE)
