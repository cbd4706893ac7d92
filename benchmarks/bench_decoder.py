"""The real-width DeepSeek-OCR decoder under each experts implementation: generation tokens/s (batch 1 and 8) and
the training step, side by side on the same weights; plus the fast decode path (static KV cache + torch.compile).

Real widths (hidden 1280, 64 experts, 6 per token, vocabulary 129,280) with random weights. On a CPU the decoder
keeps 2 of its 12 layers (the dense layer 0 and one MoE layer; all 12 on CUDA), and the pages are left out: the
frozen DeepEncoder's cost is the same under every implementation and is measured by `bench_encoder`. Generation
is greedy from a 64-token prompt, forced to `new_tokens` tokens; the training step is forward + backward of a
batch of 2 x 256 tokens (the optimizer step is the same for every implementation and left out). `batched_mm` is
skipped, and says so, where its gathered expert weights would not fit (see `bench_moe`). float32 on a CPU,
bfloat16 on CUDA.

    python -m benchmarks.bench_decoder [--quick]
"""
from __future__ import annotations

import sys

import torch

from benchmarks.bench_moe import IMPLEMENTATIONS, batched_mm_bytes, free_bytes
from benchmarks.cli import benchmark_main
from benchmarks.timing import median_seconds

PROMPT_TOKENS = 64
TRAIN_BATCH = (2, 256)


def build_decoder(device: torch.device, dtype: torch.dtype):
    from model.configuration import DeepSeekOCRConfig
    from model.deep_encoder import VisionConfig
    from model.modeling import DeepSeekOCRForConditionalGeneration

    vision = VisionConfig.tiny()  # not run here; tiny so that it costs no memory
    layers = 12 if device.type == "cuda" else 2
    config = DeepSeekOCRConfig(num_hidden_layers=layers, vision_config=vision.to_dict(),
                               projector_input_dim=vision.out_dim)
    with torch.device(device):
        model = DeepSeekOCRForConditionalGeneration(config)
    return model.to(dtype).eval(), layers


def fits(model, implementation: str, tokens: int, dtype: torch.dtype) -> bool:
    return implementation != "batched_mm" or batched_mm_bytes(model.config, tokens, dtype) <= free_bytes(model.checkpoint.device) // 4


def add_speedups(group: list[dict]) -> list[dict]:
    """Speed-up over the group's first row (eager), for the rows that ran."""
    eager = group[0].get("tokens_per_s")
    for row in group:
        if isinstance(eager, float) and isinstance(row.get("tokens_per_s"), float):
            row["speedup_vs_eager"] = round(row["tokens_per_s"] / eager, 2)
    return group


def generation_rows(model, device, dtype, new_tokens: int, repeats: int) -> list[dict]:
    from model.fast_decode import fast_decode_kwargs

    rows = []
    for batch in (1, 8):
        ids = torch.randint(3, 100_000, (batch, PROMPT_TOKENS), device=device,
                            generator=torch.Generator(device=device).manual_seed(batch))
        settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=2)
        paths = [(impl, False) for impl in IMPLEMENTATIONS] + [("grouped_mm", True)]
        reference, group = None, []
        for implementation, fast in paths:
            row = {"bench": "decoder_generate", "batch": batch, "implementation": implementation,
                   "path": "static cache + compile" if fast else "dynamic cache"}
            if not fits(model, implementation, batch * PROMPT_TOKENS, dtype):
                group.append({**row, "tokens_per_s": "skipped: batched_mm prefill does not fit"})
                continue
            model.set_experts_implementation(implementation)
            extra = fast_decode_kwargs(model) if fast else {}
            outputs = []  # the warm-up call also compiles the fast path
            with torch.no_grad():
                seconds = median_seconds(
                    lambda: outputs.append(model.generate(input_ids=ids, **settings, **extra)), device, repeats)
            out = outputs[-1]
            reference = out if reference is None else reference
            group.append({**row, "tokens_per_s": round(batch * new_tokens / seconds, 2),
                          "same_ids_as_eager": torch.equal(out, reference)})
            print(group[-1], file=sys.stderr, flush=True)
        rows += add_speedups(group)
    return rows


def training_rows(model, device, dtype, repeats: int) -> list[dict]:
    batch, length = TRAIN_BATCH
    ids = torch.randint(3, 100_000, (batch, length), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))
    model.train()
    rows = []
    for implementation in IMPLEMENTATIONS:
        row = {"bench": "decoder_train_step", "batch": f"{batch} x {length}", "implementation": implementation}
        if not fits(model, implementation, batch * length, dtype):
            rows.append({**row, "step_s": "skipped: batched_mm does not fit"})
            continue
        model.set_experts_implementation(implementation)

        def step():
            model(input_ids=ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)

        seconds = median_seconds(step, device, repeats)
        rows.append({**row, "step_s": round(seconds, 3), "tokens_per_s": round(batch * length / seconds, 1)})
        print(rows[-1], file=sys.stderr, flush=True)
    model.eval()
    return add_speedups(rows)


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, layers = build_decoder(device, dtype)
    new_tokens = 8 if quick else 32
    repeats = 1 if quick else 3
    rows = generation_rows(model, device, dtype, new_tokens, repeats) + training_rows(model, device, dtype, repeats)
    return [{**row, "decoder_layers": layers} for row in rows]


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "8 new tokens instead of 32, one timed run of each", argv)


if __name__ == "__main__":
    sys.exit(main())
