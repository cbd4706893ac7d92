"""The project's configuration, as plain typed dataclasses with commented defaults.

One object flows from the CLI or a JSON file into every package: `RenderConfig` into data rendering (and is saved
with a trained model so inference renders exactly as training did), `GenerationSettings` into evaluation and
inference, `TrainingConfig` (which holds the other two) into training. Validation lives in each `__post_init__`.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

from config.loading import ConfigError

from config.modes import RESOLUTION_MODES, ModeName, ResolutionMode


# transformers' experts implementations for the MoE decoder (model/modeling.py).
ExpertsImplementation = Literal["eager", "grouped_mm", "batched_mm"]
EXPERTS_IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(ExpertsImplementation)


@dataclass
class RenderConfig:
    """How documents become page images (data/text_to_image.py). Saved with each trained model."""

    mode: ModeName = "small"
    # 12 px keeps a full page just under DeepSeek-OCR's 10x compression knee (about 9.3x) with about 99.7%
    # OCR character accuracy; 10 px gives about 13x at about 98% (see ../docs and rendering measurements).
    font_size: int = 12
    line_spacing: float = 1.2  # line height as a multiple of the font size
    margin: int = 20  # pixels on every side
    # What to do with text that does not fit on one page: "paginate" into more pages, or "error".
    overflow: Literal["paginate", "error"] = "paginate"
    max_pages: Optional[int] = None  # cap on pages per document; exceeding it is an error, never a silent cut

    def __post_init__(self) -> None:
        if self.mode not in RESOLUTION_MODES:
            raise ConfigError(f"config key 'mode' must be one of {sorted(RESOLUTION_MODES)}, got {self.mode!r}")
        if not 4 <= self.font_size <= 200:
            raise ConfigError(f"config key 'font_size' must be between 4 and 200, got {self.font_size}")
        if not 0.8 <= self.line_spacing <= 4.0:
            raise ConfigError(f"config key 'line_spacing' must be between 0.8 and 4.0, got {self.line_spacing}")
        geometry = RESOLUTION_MODES[self.mode]
        if not 0 <= self.margin < min(geometry.page_width, geometry.page_height) // 4:
            raise ConfigError(f"config key 'margin' is out of range for mode {self.mode}: {self.margin}")
        if self.max_pages is not None and self.max_pages < 1:
            raise ConfigError(f"config key 'max_pages' must be at least 1, got {self.max_pages}")

    @property
    def geometry(self) -> ResolutionMode:
        return RESOLUTION_MODES[self.mode]


@dataclass
class GenerationSettings:
    """Decoding settings shared by evaluation during training, batch generation and the inference server."""

    max_new_tokens: int = 128
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperature: float = 0.0  # 0 means greedy decoding; above 0 samples
    batch_size: int = 4
    # Fast decode path: a static KV cache and torch.compile of the decode step (model/fast_decode.py). Off by
    # default: on a CPU it measured slower (compilation, no CUDA graphs); not yet measured on a GPU.
    compile: bool = False

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": 1 <= self.max_new_tokens <= 8192,
            "num_beams": 1 <= self.num_beams <= 16,
            "length_penalty": -5.0 <= self.length_penalty <= 5.0,
            "no_repeat_ngram_size": 0 <= self.no_repeat_ngram_size <= 100,
            "temperature": 0.0 <= self.temperature <= 5.0,
            "batch_size": 1 <= self.batch_size <= 1024,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"config key '{key}' is out of range: {getattr(self, key)!r}")

    def generate_kwargs(self) -> dict:
        """Keyword arguments for transformers' `generate`."""
        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "do_sample": self.temperature > 0,
        }
        if self.temperature > 0:
            kwargs["temperature"] = self.temperature
        return kwargs


@dataclass
class OptimizerConfig:
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 500
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"config key 'learning_rate' must be in (0, 1), got {self.learning_rate}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.max_grad_norm <= 0:
            raise ConfigError("config keys 'weight_decay', 'warmup_steps' must be >= 0 and 'max_grad_norm' > 0")


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TrainingConfig:
    """Everything a training run needs; the JSON format of the README, flags override it."""

    model_name: str = "deepseek-ai/DeepSeek-OCR"
    output_dir: str = "./deepseek-summarizer"
    use_deepseek_ocr: bool = False
    # Data: local files, or a hub dataset with its splits.
    train_file: Optional[str] = None
    val_file: Optional[str] = None
    hf_dataset: Optional[str] = None
    hf_train_split: str = "train"
    hf_val_split: Optional[str] = None
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    # Batching and schedule.
    batch_size: int = 4
    num_epochs: int = 4
    max_steps: int = -1  # > 0 overrides num_epochs
    gradient_accumulation_steps: int = 8
    max_length: int = 512  # summary tokens (DeepSeek-OCR) / target tokens (seq2seq)
    max_source_length: int = 1024  # seq2seq baseline only: source text tokens
    source_prefix: Optional[str] = None  # seq2seq baseline: "summarize: " for T5
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"  # auto: bf16 on CUDA, float32 on CPU
    gradient_checkpointing: bool = True
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # DeepSeek-OCR specifics.
    instruction: str = "Summarize the document."
    train_projector: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    vision_cache: Literal["none", "memory", "disk"] = "none"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # MoE routed experts kernels (transformers' experts implementations). None: transformers' default, grouped_mm
    # wherever it dispatches, else eager; the run's saved training config records the one in use.
    experts_implementation: Optional[ExpertsImplementation] = None
    render: RenderConfig = field(default_factory=RenderConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # Logging, checkpoints, hub.
    log_interval: int = 25
    save_interval: int = 1000
    eval_steps: Optional[int] = None  # None: evaluate at the end of each epoch
    save_total_limit: int = 3
    report_to: str = "tensorboard"
    seed: int = 42
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    hub_private: bool = False

    def __post_init__(self) -> None:
        positive = ["batch_size", "num_epochs", "gradient_accumulation_steps", "max_length", "max_source_length",
                    "log_interval", "save_interval", "save_total_limit"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}' must be at least 1, got {getattr(self, key)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"config key 'max_steps' must be -1 (use num_epochs) or positive, got {self.max_steps}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ConfigError(f"config key 'eval_steps' must be at least 1, got {self.eval_steps}")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("config key 'hub_model_id' is required when 'push_to_hub' is true")
