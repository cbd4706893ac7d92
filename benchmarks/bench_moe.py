"""One real-size DeepSeek-OCR MoE layer (64 routed experts, 6 per token, 2 shared; hidden 1280, expert width 896)
under each of transformers' experts implementations, side by side on the same weights and tokens.

Per token count (1, 64, 512, 2048; --quick: 1 and 64, one timed forward + backward): forward time (no grad, as in
generation) and forward + backward time (as in training), their speed-up over the `eager` per-expert loop, and the
largest difference of the output from eager's. float32 on a CPU, bfloat16 on CUDA. `batched_mm` gathers a copy of
its expert's weights for every (token, expert) pair (about 14 MB each in float32 at this size), so it is skipped,
and says so, where that copy and its gradient would not fit in a quarter of the free memory.

    python -m benchmarks.bench_moe [--quick]
"""
from __future__ import annotations

import os
import sys

import torch

from benchmarks.cli import benchmark_main
from benchmarks.timing import median_seconds

IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")




def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def batched_mm_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """Gathered gate_up + down weights per (token, expert) pair, forward copy and its gradient."""
    per_pair = 3 * config.moe_intermediate_size * config.hidden_size * torch.finfo(dtype).bits // 8
    return 2 * tokens * config.num_experts_per_tok * per_pair


def build_layer(device: torch.device, dtype: torch.dtype):
    """The real-size MoE block of a decoder layer, random weights (the official init scale, 0.02)."""
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextMoe

    from model.configuration import DeepSeekOCRConfig

    config = DeepSeekOCRConfig()
    with torch.device(device):
        layer = DeepseekOcr2TextMoe(config)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(std=config.initializer_range)
    return layer.to(dtype), config


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    layer, config = build_layer(device, dtype)
    token_counts = (1, 64) if quick else (1, 64, 512, 2048)
    # Forward passes are cheap and noisy: always a few; --quick times one forward + backward.
    forward_repeats, backward_repeats = 5, (1 if quick else 5)
    rows = []
    for tokens in token_counts:
        generator = torch.Generator(device=device).manual_seed(tokens)
        hidden = torch.randn(1, tokens, config.hidden_size, device=device, dtype=dtype, generator=generator)
        reference = None
        for implementation in IMPLEMENTATIONS:
            row = {"bench": "moe_layer", "device": device.type, "dtype": str(dtype).removeprefix("torch."),
                   "tokens": tokens, "implementation": implementation}
            needed = batched_mm_bytes(config, tokens, dtype)
            if implementation == "batched_mm" and needed > free_bytes(device) // 4:
                rows.append({**row, "forward_ms": f"skipped: needs {needed / 2**30:.0f} GiB"})
                continue
            config._experts_implementation = implementation  # the experts read it at every call

            def forward():
                with torch.no_grad():
                    return layer(hidden)

            def forward_backward():
                layer(hidden.requires_grad_()).float().square().mean().backward()
                layer.zero_grad(set_to_none=True)

            out = forward().float()
            reference = out if implementation == "eager" else reference
            rows.append({
                **row,
                "forward_ms": round(1000 * median_seconds(forward, device, forward_repeats), 2),
                "fwd_bwd_ms": round(1000 * median_seconds(forward_backward, device, backward_repeats), 2),
                "max_abs_diff_vs_eager": f"{(out - reference).abs().max().item():.1e}",
            })
            hidden = hidden.detach()
            print(rows[-1], file=sys.stderr, flush=True)
        eager = rows[-len(IMPLEMENTATIONS)]
        for row in rows[-len(IMPLEMENTATIONS):]:
            if "fwd_bwd_ms" in row:
                row["forward_speedup"] = round(eager["forward_ms"] / row["forward_ms"], 2)
                row["fwd_bwd_speedup"] = round(eager["fwd_bwd_ms"] / row["fwd_bwd_ms"], 2)
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "token counts 1 and 64 only, one timed forward + backward", argv)


if __name__ == "__main__":
    sys.exit(main())
