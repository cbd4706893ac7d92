"""`DeepSeekOCRTrainer`: the Hugging Face `Trainer` for DeepSeek-OCR summarization (frozen DeepEncoder).

The loop, mixed precision, gradient accumulation, checkpoints, resuming and multi-GPU are the `Trainer`'s; this
class adds the model setup (freezing, LoRA, dtypes), the vision cache, logging of the loss parts, and a save
format that inference loads directly; training/faults.py's guard stops or skips a non-finite step.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from transformers import Trainer, TrainingArguments

from config import LoraConfig, TrainingConfig, save_run_settings
from data.jsonl import read_json_object, write_json_atomic
from data.tokens import prompt_positions
from model.checkpoint.convert import model_config
from model.checkpoint.device import PRECISIONS
from model.checkpoint.load import load_pretrained
from model.checkpoint.lora import merge_lora_state_dict
from model import backbones
from model.params import DECODER_PARTS, estimate_training_memory, parameter_counts, trainable_parameter_counts
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from training.arguments import training_arguments, training_device
from training.collator import DeepSeekOCRCollator
from training.context import SPLIT_NAMES, check_text_input, within_context
from training.data import TrainDataError
from training.faults import NonFiniteGuard
from training.resume import Resumable
from training.vision_cache import VisionFeatureCache

# Disk cache location: outside output_dir, which is saved and may be pushed to the hub.
VISION_CACHE_ENV = "DEEPSEEK_OCR_VISION_CACHE"
DEFAULT_VISION_CACHE_DIR = Path.home() / ".cache" / "deepseek-ocr-summarizer" / "vision-features"


def add_lora_adapters(model, lora: LoraConfig) -> None:
    """Freeze the decoder and lm_head and inject trainable LoRA adapters into the decoder's projections only.

    The backbone's pattern is anchored to the decoder's layers, because the frozen encoder has projections of the
    same names. Injected in place (no PeftModel wrapper): the model keeps its class, so the Trainer saves and
    resumes its full state, and a trainable projector needs no special handling.
    """
    backbone = backbones.of_model(model)
    for module in backbone.decoder_modules(model):
        module.requires_grad_(False)
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=backbone.lora_pattern(lora.target_modules))
    inject_adapter_in_model(peft_config, model, low_cpu_mem_usage=next(model.parameters()).is_meta)


def has_lora(model) -> bool:
    return any(isinstance(module, LoraLayer) for module in model.modules())


def merged_state_dict(model, state: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every active LoRA delta (scaling * B @ A) added to its base weight.

    `state` is the model's full state dict (default: `model.state_dict()`; under FSDP, the gathered one); the
    model is not touched.
    """
    state = model.state_dict() if state is None else state
    scalings = {(name, adapter): module.scaling[adapter] for name, module in model.named_modules()
                if isinstance(module, LoraLayer) for adapter in module.active_adapters}
    return merge_lora_state_dict(state, scalings)


def build_model(cfg: TrainingConfig, half: Optional[torch.dtype] = None):
    """(model, tokenizer) of `cfg.model_name` through the one loader; the DeepEncoder frozen (and the projector
    unless `cfg.train_projector`), LoRA added.

    Frozen weights are kept in `cfg.load.dtype` when set, else in `half` (the Trainer's mixed-precision dtype),
    else float32, by the precision rule's training case on the device training runs on (float32 on a CPU);
    trainable ones become float32 master weights, because AdamW steps of ~1e-5 relative size vanish when rounded
    to bf16. The forward pass then runs under the Trainer's autocast. Loaded on the CPU: the Trainer (accelerate)
    places it, one device per process.
    """
    dtype = cfg.load.dtype or {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(half, "fp32")
    loaded = load_pretrained(cfg.model_name, dataclasses.replace(cfg.load, device=training_device(cfg), dtype=dtype),
                             place=False, training=True)
    model = loaded.model
    # The run's saved config names the kernels it really used, transformers' default included.
    cfg.load.experts_implementation = model.config._experts_implementation
    loaded.source.backbone.freeze_vision(model, train_projector=cfg.train_projector)
    if cfg.lora.enabled:
        add_lora_adapters(model, cfg.lora)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model, loaded.processor.tokenizer


def decoder_context(cfg: TrainingConfig) -> int:
    """The decoder's context of `cfg.model_name`, from its config alone (no weight is read), once settings that
    could never fit it are refused (training/context.py)."""
    context = model_config(cfg.model_name).get_text_config().max_position_embeddings
    # The prompt's positions as data counts them, the tokenizer not loaded yet; tests hold them to the processor's.
    check_text_input(cfg, context, prompt_positions(cfg.instruction))
    return context


def records_within_context(collator: DeepSeekOCRCollator, train_dataset, eval_dataset
                           ) -> tuple[list[dict], Optional[list[dict]], dict[str, int]]:
    """(training records, validation records, how many of each were left out) of those whose sequence fits the
    collator's context; a split left with none is a TrainDataError."""
    splits = {split: records for split, records in (("train", train_dataset), ("val", eval_dataset))
              if records is not None}
    if collator.processor.input_mode == "text":  # every record fits once check_text_input let the settings through
        return train_dataset, eval_dataset, dict.fromkeys(splits, 0)
    kept, over = {}, {}
    for split, records in splits.items():
        kept[split], over[split] = within_context(records, collator.sequence_length, collator.context)
        if records and not kept[split]:
            raise TrainDataError(f"every {SPLIT_NAMES[split]} record is longer than the decoder's context of "
                                 f"{collator.context} positions (its pages, instruction and summary of up to "
                                 f"{collator.max_target_length} tokens): render smaller pages (a lower mode) or "
                                 "lower max_length")
    return kept["train"], kept.get("val"), over


class DeepSeekOCRTrainer(Resumable, NonFiniteGuard, Trainer):
    """A `Trainer` whose batches come from `DeepSeekOCRCollator`; build it with `from_config`."""

    def __init__(self, *args, cfg: TrainingConfig, processor: DeepSeekOCRProcessor,
                 vision_cache: Optional[VisionFeatureCache] = None, context: Optional[int] = None,
                 over_context: Optional[dict[str, int]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = cfg
        self.processor = processor
        self.vision_cache = vision_cache
        self.context = context  # the decoder's max_position_embeddings
        self.over_context = over_context or {}  # records left out as longer than the context, by split
        # The model's loss is a per-batch mean; without this the Trainer would pass `num_items_in_batch` into
        # forward (which takes **kwargs) and skip its own division by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.truncated_targets = 0
        self.truncated_sources = 0  # text input only: documents cut to max_source_length tokens
        self._part_sums: dict[str, torch.Tensor] = {}
        self._part_count = 0

    @classmethod
    def from_config(cls, cfg: TrainingConfig, train_dataset, eval_dataset=None,
                    args: Optional[TrainingArguments] = None, callbacks=None,
                    compute_metrics=None) -> "DeepSeekOCRTrainer":
        args = args or training_arguments(cfg, evaluate=eval_dataset is not None)
        # One precision rule (model/checkpoint/device.py, applied by training_arguments): frozen weights in the
        # Trainer's 16-bit dtype, if any, unless load.dtype names another.
        half = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        # Records carry text, not model inputs: the Trainer must not drop their columns. Without metrics,
        # evaluation keeps only the loss instead of gathering [batch, length, 129k] logits.
        args = dataclasses.replace(
            args, remove_unused_columns=False,
            prediction_loss_only=args.prediction_loss_only or compute_metrics is None,
        )
        context = decoder_context(cfg)  # settings that cannot fit are refused before the weights load
        model, tokenizer = build_model(cfg, half)
        backbone = backbones.of_model(model)
        processor = DeepSeekOCRProcessor(tokenizer, backbone.page_processor(cfg.render.mode), cfg.instruction,
                                         input_mode=cfg.input_mode, max_source_length=cfg.max_source_length)
        cache = None
        if cfg.vision_cache != "none" and backbone.caches_vision_features:
            folder = os.environ.get(VISION_CACHE_ENV, DEFAULT_VISION_CACHE_DIR) if cfg.vision_cache == "disk" else None
            cache = VisionFeatureCache(model, folder)
        collator = DeepSeekOCRCollator(processor, cfg.render, cfg.max_length, with_page_keys=cache is not None,
                                       context=context)
        train_dataset, eval_dataset, over = records_within_context(collator, train_dataset, eval_dataset)
        return cls(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                   eval_dataset=eval_dataset, callbacks=callbacks, compute_metrics=compute_metrics,
                   cfg=cfg, processor=processor, vision_cache=cache, context=context, over_context=over,
                   on_nonfinite=cfg.on_nonfinite)

    def _counts_file(self, folder: str) -> Path:
        return Path(folder) / f"truncation_counts-rank{self.args.process_index}.json"

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Also the truncation counts of the steps before the checkpoint: a resumed run reports the whole run's."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        counts = read_json_object(self._counts_file(resume_from_checkpoint))
        self.truncated_targets = counts.get("truncated_targets", 0)
        self.truncated_sources = counts.get("truncated_sources", 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        truncated = inputs.pop("target_truncated", None)
        sources_cut = inputs.pop("source_truncated", None)
        for key in REPORTING_KEYS:
            inputs.pop(key, None)
        if self.vision_cache is not None and "page_keys" in inputs:
            # Called outside forward, so outside the autocast accelerate wraps forward in.
            with self.accelerator.autocast():
                inputs = self.vision_cache.model_inputs(self.accelerator.unwrap_model(model), inputs)
        inputs.pop("page_keys", None)
        outputs = model(**inputs)
        if model.training:
            self._record(outputs, truncated)
            if sources_cut is not None:
                self.truncated_sources += int(sources_cut.sum())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _record(self, outputs, truncated: Optional[torch.Tensor]) -> None:
        # Detached running sums, read once per logging step (no device sync per step).
        for name in ("ce_loss", "aux_loss"):
            value = getattr(outputs, name, None)
            if value is not None:
                self._part_sums[name] = self._part_sums.get(name, 0) + value.detach().float()
        self._part_count += 1
        if truncated is not None:
            self.truncated_targets += int(truncated.sum())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._part_count:
            for name, total in self._part_sums.items():
                logs[name] = round(float(total) / self._part_count, 6)
            logs["truncated_targets"] = self.truncated_targets
            if self.cfg.input_mode == "text":
                logs["truncated_sources"] = self.truncated_sources
            self._part_sums, self._part_count = {}, 0
        super().log(logs, start_time)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """A folder that `load_model` and the processor load directly: weights, config, processor, settings.

        Checkpoints keep the LoRA adapters unmerged so training resumes exactly; the final save merges them
        into plain weights.
        """
        # Checkpoints are the internal saves into a named checkpoint folder; push_to_hub's own save (no folder)
        # must be the final, merged form.
        checkpoint = _internal_call and output_dir is not None
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        if not checkpoint and (self.is_fsdp_enabled or has_lora(model)):
            # The final folder holds plain, whole weights: FSDP shards are gathered (every rank takes part) and
            # LoRA deltas merged, so inference loads it with no training library.
            state = self.accelerator.get_state_dict(self.model) if self.is_fsdp_enabled else None
            if self.args.should_save:
                model.save_pretrained(output_dir, state_dict=merged_state_dict(model, state))
        else:
            super().save_model(output_dir, _internal_call=True)  # pushing waits until the folder is complete
        if self.args.should_save:
            self.processor.save_pretrained(output_dir)
            save_run_settings(output_dir, self.cfg.render, self.cfg.generation)
        if checkpoint:  # every process's own, before the Trainer's state file, so a complete checkpoint has them
            Path(output_dir).mkdir(parents=True, exist_ok=True)  # the main process may not have made it yet
            write_json_atomic(self._counts_file(output_dir), {"truncated_targets": self.truncated_targets,
                                                              "truncated_sources": self.truncated_sources})
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:8.2f}"


def dry_run_report(cfg: TrainingConfig) -> str:
    """Trainable/frozen counts and weights/gradients/AdamW memory for full and LoRA fine-tuning of
    `cfg.model_name`, from a meta-device model (no weights are read or allocated)."""
    from model.checkpoint.source import resolve_model_source

    backbone = resolve_model_source(cfg.model_name).backbone
    # The estimate is for the GPU run: "auto" means bf16 there; load.dtype, when set, is the frozen weights'.
    dtype = PRECISIONS.get(cfg.load.dtype or cfg.mixed_precision, torch.bfloat16)
    rows, counts = [], None
    for lora in (False, True):
        with torch.device("meta"):
            model = backbone.build_empty(model_config(cfg.model_name), torch.float32)
        backbone.freeze_vision(model, train_projector=cfg.train_projector)
        if lora:
            add_lora_adapters(model, cfg.lora)
        counts = counts or parameter_counts(model, backbone.parameter_parts)
        trainable = trainable_parameter_counts(model)
        memory = estimate_training_memory(model, dtype, trainable=trainable["trainable"])
        label = f"LoRA r={cfg.lora.r}" if lora else "full decoder"
        rows.append(f"{label:<14}{trainable['trainable']:>15,}{trainable['frozen']:>15,}"
                    + "".join(_gib(memory[k]) for k in ("weights", "gradients", "optimizer", "total")))
    lines = [
        f"Dry run of {cfg.model_name} on the meta device (nothing loaded); projector "
        f"{'trainable' if cfg.train_projector else 'frozen'}, {backbone.encoder_title} frozen.",
        f"Parameters: {counts['total']:,} = "
        + " + ".join(f"{part} {counts[part]:,}" for part in backbone.parameter_parts if part not in DECODER_PARTS)
        + f" + decoder {counts['decoder_total']:,} (active per token {counts['decoder_active']:,})",
        f"Decoder context: {decoder_context(cfg)} positions; records whose pages, instruction and summary take more "
        "are left out of training and counted.",
        f"Memory in GiB ({str(dtype).removeprefix('torch.')} weights, float32 trainable master weights and AdamW "
        "states; activations excluded):",
        f"{'':<14}{'trainable':>15}{'frozen':>15}{'weights':>8}{'grads':>8}{'AdamW':>8}{'total':>8}",
        *rows,
    ]
    return "\n".join(lines)
