"""The project's configuration: typed dataclasses whose fields declare every setting once.

One object flows from the CLI or a JSON file into every package: `RenderConfig` into data rendering (and is saved
with a trained model so inference renders exactly as training did), `GenerationSettings` into evaluation and
inference, `TrainingConfig` (which holds the others) into training. Each field's description is its `--help`
text and its API documentation; its bounds are checked wherever the object is built (config/loading.py).
`flags` in a field's extra names its command-line spelling where it differs from the field's name (the
reference README's flags).
"""
from __future__ import annotations

import typing
from dataclasses import field, fields
from typing import Literal, Optional

from pydantic import Field

from config.loading import Bool, ConfigError, Float, Int, Str, field_extra, settings
from config.modes import RESOLUTION_MODES, ModeName, ResolutionMode

# What DeepSeek-OCR's decoder reads of a document: its rendered pages (vision tokens), or its text tokens (the
# control arm that measures what compression costs). Saved with the model (processor_config.json).
InputMode = Literal["pixels", "text"]

# transformers' experts implementations for the MoE decoder's routed experts (model/modeling.py).
ExpertsImplementation = Literal["eager", "grouped_mm", "batched_mm"]
EXPERTS_IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(ExpertsImplementation)

# The precision names of weights, one vocabulary for every command and config (model/checkpoint/device.py maps
# each to its torch dtype; "no" is mixed_precision's word for float32).
WeightPrecision = Literal["bf16", "bfloat16", "fp16", "float16", "fp32", "float32", "no"]

# How a document longer than the decoder's context is read (GenerationSettings.long_documents).
LongDocuments = Literal["auto", "fit", "hierarchical", "truncate", "error"]

# What runs the decoder when a model serves (LoadSettings.engine); training always runs on torch.
Engine = Literal["torch", "llamacpp"]


def _flags(*names: str, **extra) -> dict:
    return {"flags": list(names), **extra}


# A GenerationSettings field that is passed to transformers' `generate` under its own name.
GENERATE = {"generate": True}


@settings
class RenderConfig:
    """How documents become page images (data/text_to_image.py). Saved with each trained model."""

    mode: ModeName = Field("small", description="resolution mode: tiny, small, base, large, gundam or page",
                           json_schema_extra=_flags("--mode"))
    # 12 px keeps a full page just under DeepSeek-OCR's 10x compression knee (text tokens per vision token), below
    # which it reads a page back almost entirely; smaller fonts go past it (see docs/data.md; legibility is
    # checked by tests/data/test_text_to_image.py).
    font_size: Int = Field(12, ge=4, le=200, description="font size in pixels",
                           json_schema_extra=_flags("--font-size"))
    line_spacing: Float = Field(1.2, ge=0.8, le=4.0, description="line height as a multiple of the font size")
    margin: Int = Field(20, ge=0, description="page margin in pixels, on every side")
    overflow: Literal["paginate", "error"] = Field(
        "paginate", description="text longer than one page: 'paginate' into more pages, or 'error'")
    max_pages: Optional[Int] = Field(None, ge=1, description="cap on pages per document; more is an error, "
                                     "never a silent cut (default: no cap)")

    def __post_init__(self) -> None:
        geometry = RESOLUTION_MODES[self.mode]
        if self.margin >= min(geometry.page_width, geometry.page_height) // 4:
            raise ConfigError(f"config key 'margin' is out of range for mode {self.mode}: {self.margin}")

    @property
    def geometry(self) -> ResolutionMode:
        return RESOLUTION_MODES[self.mode]


@settings
class GenerationSettings:
    """Decoding settings shared by evaluation during training, batch generation and the inference server.

    A trained model folder carries its own (config/artifacts.py); every command that generates starts from
    those and applies its flags on top. `public` is the name the reference README's infer flags and API use.
    """

    max_new_tokens: Int = Field(128, ge=1, le=8192, description="maximum new tokens of each summary",
                                json_schema_extra={"public": "max_length", "generate": True})
    num_beams: Int = Field(1, ge=1, le=16, description="beam search width (1: greedy or sampling)",
                           json_schema_extra=GENERATE)
    length_penalty: Float = Field(1.0, ge=-5.0, le=5.0, description="beam search length penalty",
                                 json_schema_extra=GENERATE)
    # The loop guard (inference/loop_guard.py), on the summary's tokens alone. On by default: a decoder stuck in a
    # loop is DeepSeek-OCR's most reported failure; why 3 (benchmarks.bench_loop_guard): docs/evaluation.md.
    no_repeat_ngram_size: Int = Field(3, ge=0, le=100, description="no n-gram of this many tokens occurs twice in a "
                                      "summary (0: off)", json_schema_extra=GENERATE)
    # Not passed to transformers' generate: the loop guard's own.
    no_repeat_ngram_window: Int = Field(0, ge=0, le=8192, description="no_repeat_ngram_size only within the "
                                        "summary's last this many tokens (0: the whole summary; DeepSeek-OCR's "
                                        "recipe: 90, with n-grams of 30)")
    temperature: Float = Field(0.0, ge=0.0, le=5.0, description="0: greedy decoding; above 0: sampling",
                                json_schema_extra=GENERATE)
    # Not passed to generate: how a document longer than the decoder's context is read (inference/long_documents.py).
    long_documents: LongDocuments = Field(
        "auto", description="a document whose prompt and summary do not fit the decoder's context: 'fit' reads its "
        "pages at a lower resolution mode (text no smaller than the legibility floor), 'hierarchical' summarizes "
        "windows of pages that fit and then their summaries, 'truncate' reads what fits from the start, 'error' "
        "refuses it; 'auto': fit when it can, hierarchical beyond")
    # Not per request (`per_request`): the API server's batcher and the model folder decide these two.
    batch_size: Int = Field(4, ge=1, le=1024, description="documents generated together",
                            json_schema_extra={"per_request": False})
    # Off by default: on a CPU compiling costs more than it saves for a few documents (no CUDA graphs there); see
    # benchmarks.bench_decoder's fast decode path rows.
    compile: Bool = Field(False, description="fast decode path: static KV cache and torch.compile of the decode "
                          "step (model/fast_decode.py)", json_schema_extra={"per_request": False})

    def generate_kwargs(self) -> dict:
        """Keyword arguments for transformers' `generate`: every field marked `generate` in its declaration, under
        its own name. Temperature 0 is greedy decoding here; transformers says that with do_sample=False."""
        marked = [f.name for f in fields(self) if field_extra(type(self), f.name).get("generate")]
        kwargs = {name: getattr(self, name) for name in marked}
        kwargs["do_sample"] = self.temperature > 0
        if not kwargs["do_sample"]:
            del kwargs["temperature"]
        return kwargs


@settings
class LoadSettings:
    """How a model is loaded: device, precision and kernels. One block for training (`TrainingConfig.load`),
    generation and inference (flags of the same names) and the API server (DEVICE, DTYPE, ... variables)."""

    device: Optional[Str] = Field(None, description="cpu, cuda, cuda:1... (default: cuda if available, else cpu; "
                                  "training: cpu or cuda, its GPUs chosen with CUDA_VISIBLE_DEVICES)",
                                  json_schema_extra=_flags("--device"))
    dtype: Optional[Str] = Field(None, description="weights' precision: auto, bf16/bfloat16, fp16/float16, "
                                 "fp32/float32 (default: auto = bf16 on a GPU that supports it, else float32 with the "
                                 "page encoder in bf16 on a CPU with AMX or AVX512-BF16; in training: the frozen "
                                 "weights' dtype, default mixed_precision's half dtype, float32 on a CPU)",
                                 json_schema_extra=_flags("--dtype"))
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="attention kernels", json_schema_extra=_flags("--attn-implementation"))
    experts_implementation: Optional[ExpertsImplementation] = Field(
        None, description="MoE routed-experts kernels (transformers' experts implementations); default: grouped_mm "
        "wherever it dispatches, else eager", json_schema_extra=_flags("--experts-implementation"))
    # llama.cpp decodes faster than torch on a CPU (quantized weights, its own kernels; see
    # benchmarks.bench_cpu_serving); pages are still encoded by this project's DeepEncoder, so every render mode
    # reads as trained.
    engine: Engine = Field("torch", description="decoder engine: torch, or llamacpp (llama.cpp through "
                           "llama-cpp-python; needs a folder exported with `python -m model.export --format gguf`)",
                           json_schema_extra=_flags("--engine"))
    gguf: Optional[Str] = Field(None, description="llamacpp engine: the decoder's GGUF file (default: the one "
                                "model-*.gguf in the model folder's gguf/)",
                                json_schema_extra=_flags("--gguf", metavar="FILE"))

    def __post_init__(self) -> None:
        if self.gguf and self.engine != "llamacpp":
            # Both named as keys: a command names each by its flag, the API server by its environment variable.
            raise ConfigError(f"config key 'gguf' names a file for the llamacpp engine, but config key 'engine' is "
                              f"{self.engine!r}")


@settings
class OptimizerConfig:
    learning_rate: Float = Field(2e-5, gt=0, lt=1, description="peak learning rate (AdamW)",
                                 json_schema_extra=_flags("--learning-rate"))
    weight_decay: Float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_steps: Int = Field(500, ge=0, description="linear warm-up steps")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="learning-rate schedule after warm-up")
    max_grad_norm: Float = Field(1.0, gt=0, description="gradient clipping norm")


@settings
class LoraConfig:
    enabled: Bool = Field(False, description="DeepSeek-OCR: train LoRA adapters instead of the full decoder",
                          json_schema_extra=_flags("--lora"))
    r: Int = Field(16, ge=1, description="LoRA rank")
    alpha: Int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r)")
    dropout: Float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[Str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="decoder projections that get adapters")


Task = Literal["deepseek-ocr", "seq2seq"]


@settings
class TrainingConfig:
    """Everything a training run needs; the JSON format of the README, flags override it."""

    model_name: Str = Field("deepseek-ai/DeepSeek-OCR", description="preset (tiny-random), hub id or local folder",
                            json_schema_extra=_flags("--model-name", "--model", metavar="ID_OR_PATH"))
    task: Optional[Task] = Field(
        None, description="deepseek-ocr (page images -> summary) or seq2seq (text -> summary, the baseline); "
        "default: from the model (DeepSeek-OCR models train as deepseek-ocr, others as seq2seq)",
        json_schema_extra=_flags("--task", switches={"--use-deepseek-ocr": "deepseek-ocr"}))
    output_dir: Str = Field("./deepseek-summarizer", description="output folder",
                            json_schema_extra=_flags("--output", "--output-dir", metavar="DIR"))
    # Data: local files, or a hub dataset with its splits.
    train_file: Optional[Str] = Field(None, description="prepared training JSONL (python -m data.prepare_datasets)",
                                      json_schema_extra=_flags("--train", metavar="FILE"))
    val_file: Optional[Str] = Field(None, description="prepared validation JSONL",
                                    json_schema_extra=_flags("--val", metavar="FILE"))
    hf_dataset: Optional[Str] = Field(None, description="hub dataset instead of local files (streamed)")
    hf_train_split: Str = Field("train", description="hub training split")
    hf_val_split: Optional[Str] = Field(None, description="hub validation split (default: validation if present)")
    max_train_samples: Optional[Int] = Field(None, ge=1, description="use at most N training records")
    max_eval_samples: Optional[Int] = Field(None, ge=1, description="use at most N validation records")
    # Batching and schedule.
    batch_size: Int = Field(4, ge=1, description="per-device batch size")
    num_epochs: Int = Field(4, ge=1, description="training epochs")
    max_steps: Int = Field(-1, ge=-1, description="optimizer steps; overrides num_epochs (-1: use num_epochs)")
    gradient_accumulation_steps: Int = Field(8, ge=1, description="batches per optimizer step")
    max_length: Int = Field(512, ge=1, description="summary tokens (DeepSeek-OCR) / target tokens (seq2seq)")
    max_source_length: Int = Field(1024, ge=1, description="source text tokens: the seq2seq baseline, and "
                                   "DeepSeek-OCR with input_mode text")
    source_prefix: Optional[Str] = Field(None, description="seq2seq baseline: text before each document "
                                         "(default: 'summarize: ' for T5, none otherwise)")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="auto: bf16 where the GPU supports it, else float32; training on a CPU runs in float32 "
        "(bf16/fp16 fall back with a warning)")
    gradient_checkpointing: Bool = Field(True, description="recompute activations in backward (saves memory)")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="an optimizer step whose loss or gradient norm is NaN or infinite: 'stop' the run, "
        "naming the step and the last good checkpoint, or 'skip' its update and report the count at the end")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # DeepSeek-OCR specifics.
    instruction: Str = Field("Summarize the document.", description="DeepSeek-OCR: the prompt after the pages")
    input_mode: InputMode = Field("pixels", description="DeepSeek-OCR reads the document's rendered pages, or its "
                                  "text tokens (the control arm that measures what compression costs)")
    train_projector: Bool = Field(False, description="DeepSeek-OCR: also train the vision projector")
    lora: LoraConfig = field(default_factory=LoraConfig)
    vision_cache: Literal["none", "memory", "disk"] = Field(
        "none", description="cache the frozen vision encoder's outputs per page (later epochs skip it)")
    load: LoadSettings = field(default_factory=LoadSettings)
    render: RenderConfig = field(default_factory=RenderConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # Logging, checkpoints, hub.
    log_interval: Int = Field(25, ge=1, description="log every N steps")
    save_interval: Int = Field(1000, ge=1, description="checkpoint every N steps")
    eval_steps: Optional[Int] = Field(None, ge=1, description="evaluate every N steps (default: every epoch)")
    save_total_limit: Int = Field(3, ge=1, description="checkpoints kept")
    report_to: Str = Field("tensorboard", description="tensorboard, wandb, ... or none")
    seed: Int = Field(42, description="random seed (model init, data order, dropout)")
    push_to_hub: Bool = Field(False, description="upload checkpoints and the final model")
    hub_model_id: Optional[Str] = Field(None, description="hub repository",
                                        json_schema_extra={"metavar": "USER/NAME"})
    hub_private: Bool = Field(False, description="create the hub repository as private")
    # DeepSeek-OCR: also write the final model in the official layout (model.checkpoint.export), for vLLM, SGLang...
    export_dir: Optional[Str] = Field(None, description="DeepSeek-OCR: also export the final model in the official "
                                      "layout to this folder (python -m model.checkpoint.export)",
                                      json_schema_extra=_flags("--export", metavar="DIR"))
    export_dtype: WeightPrecision = Field("bfloat16", description="precision of the export's weights: bf16/bfloat16 "
                                          "(as the official checkpoint), fp16/float16 or fp32/float32")

    def __post_init__(self) -> None:
        if self.max_steps == 0:
            raise ConfigError("config key 'max_steps' must be -1 (use num_epochs) or positive, got 0")
        if self.input_mode == "text" and (self.vision_cache != "none" or self.train_projector):
            raise ConfigError("config key 'input_mode' is 'text': the model reads no pages, so 'vision_cache' "
                              "must be 'none' and 'train_projector' false")
        if self.load.engine != "torch":
            raise ConfigError("config key 'load.engine' must be torch for training (llama.cpp only serves models)")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("config key 'hub_model_id' is required when 'push_to_hub' is true")
