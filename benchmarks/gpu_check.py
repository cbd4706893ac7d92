"""Real-size DeepSeek-OCR on one CUDA GPU with random weights: what only a GPU can show.

Builds the real architecture (3.34B parameters) in bfloat16, freezes the DeepEncoder, and measures a training step
(full decoder fine-tuning and LoRA) with its peak memory, the encoder's time per page, SDPA against eager
attention, and generation throughput with KV cache and batching against one document at a time. The full
fine-tuning step and generation run under the default MoE experts implementation (grouped_mm where it dispatches)
and under the `eager` loop, side by side; the report names the implementation of every figure.
Writes a JSON report. `--preset tiny-random --device cpu` runs the same code path quickly on a CPU.

    python -m benchmarks.gpu_check --output gpu_report.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.timing import median_seconds
from config import RenderConfig
from config.cli import Parser
from data.text_to_image import TextToImageConverter
from model import backbones
from model.configuration import DeepSeekOCRConfig
from model.image_processing import DeepSeekOCRImageProcessor
from model.modeling import DeepSeekOCRForConditionalGeneration
from model.params import parameter_counts
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer

ARTICLE = ("The committee published its annual report on regional water supplies on Tuesday. It found that "
           "reservoir levels had recovered after two dry years, but warned that ageing pipes still lose about a "
           "fifth of treated water before it reaches homes. ") * 12




def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device):
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def build_batch(processor, mode, batch_size, device, summary_words=90):
    pages = TextToImageConverter(RenderConfig(mode=mode)).render(ARTICLE).pages[:1]
    target = " ".join(["summary"] * summary_words)
    batch = processor([[p.convert("RGB") for p in pages]] * batch_size, targets=[target] * batch_size)
    return {k: v.to(device) for k, v in batch.items() if k not in REPORTING_KEYS}


def train_steps(model, batch, device, repeats):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.train()

    def step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up, allocates optimizer state
    seconds = median_seconds(step, device, repeats)
    return seconds


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="deepseek-ai/DeepSeek-OCR")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--mode", default="base")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--output", default="gpu_report.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report: dict = {"preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "dtype": str(dtype), "mode": args.mode, "batch_size": args.batch_size, "torch": torch.__version__}

    def save():
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2), flush=True)

    config = DeepSeekOCRConfig.preset(args.preset)
    config._attn_implementation = "sdpa"
    start = time.perf_counter()
    with torch.device(device):
        model = DeepSeekOCRForConditionalGeneration(config).to(dtype)
    backbone = backbones.of_model(model)
    report["build_seconds"] = round(time.perf_counter() - start, 1)
    default_experts = model.config._experts_implementation
    report["experts_implementation_default"] = default_experts
    experts_implementations = (default_experts, "eager") if default_experts != "eager" else ("eager",)
    report["parameters"] = parameter_counts(model)
    processor = DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode(args.mode))
    batch = build_batch(processor, args.mode, args.batch_size, device)
    report["sequence_length"] = int(batch["input_ids"].shape[1])
    save()

    # Encoder: seconds per page, SDPA against eager.
    with torch.no_grad():
        pixels = batch["pixel_values"]
        for impl in ("sdpa", "eager"):
            model.set_attn_implementation(impl) if hasattr(model, "set_attn_implementation") else None
            try:
                secs = median_seconds(lambda: backbone.encode_views(model, pixels, None), device, args.repeats)
                report[f"encoder_seconds_per_page_{impl}"] = round(secs / pixels.shape[0], 4)
            except Exception as err:  # report and go on: one failing section must not hide the others
                report[f"encoder_{impl}_error"] = repr(err)[:300]
        model.set_attn_implementation("sdpa") if hasattr(model, "set_attn_implementation") else None
    save()

    backbone.freeze_vision(model)
    model.gradient_checkpointing_enable()
    for experts in experts_implementations:
        model.set_experts_implementation(experts)
        _peak_reset(device)
        try:
            seconds = train_steps(model, batch, device, args.repeats)
            report[f"full_finetune_step_seconds_{experts}"] = round(seconds, 3)
            report[f"full_finetune_tokens_per_second_{experts}"] = round(batch["input_ids"].numel() / seconds, 1)
            report[f"full_finetune_peak_gib_{experts}"] = _peak_gib(device)
        except Exception as err:
            report[f"full_finetune_error_{experts}"] = repr(err)[:300]
        model.zero_grad(set_to_none=True)
        save()
    model.set_experts_implementation(default_experts)

    # Generation: KV cache + one batched call against one document at a time.
    model.eval()
    page = TextToImageConverter(RenderConfig(mode=args.mode)).render(ARTICLE).pages[0].convert("RGB")

    def prompts(documents: int) -> dict:
        return {k: v.to(device) for k, v in processor([[page]] * documents).items() if k not in REPORTING_KEYS}

    prompt, per_doc = prompts(args.batch_size), prompts(1)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    for experts in experts_implementations:
        model.set_experts_implementation(experts)
        with torch.no_grad():
            model.generate(**prompt, **gen)  # warm-up
            batched = median_seconds(lambda: model.generate(**prompt, **gen), device, 2)
            single = median_seconds(lambda: model.generate(**per_doc, **gen), device, 2)
        report[f"generate_tokens_per_second_batched_{experts}"] = round(args.batch_size * args.new_tokens / batched, 1)
        report[f"generate_tokens_per_second_one_at_a_time_{experts}"] = round(args.new_tokens / single, 1)
        save()
    model.set_experts_implementation(default_experts)

    try:
        from peft import LoraConfig, get_peft_model

        # The decoder's projections alone (the backbone's pattern: the frozen encoder has q/k/v_proj too).
        lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=backbone.lora_pattern(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])))
        backbone.freeze_vision(lora.base_model.model)
        _peak_reset(device)
        report["lora_trainable_parameters"] = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        report["lora_step_seconds"] = round(train_steps(lora, batch, device, args.repeats), 3)
        report["lora_peak_gib"] = _peak_gib(device)
    except Exception as err:
        report["lora_error"] = repr(err)[:300]
    save()


if __name__ == "__main__":
    main()
