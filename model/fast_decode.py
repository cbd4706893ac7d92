"""The fast decode path: a static KV cache and `torch.compile` of the one-token decode step.

No official counterpart: the official `infer()` decodes with the dynamic cache of transformers 4.46. A static cache
gives every decode step the same shapes, so transformers' `generate` compiles the step once and reuses it; the
prompt step (pages, placeholders, a prompt-length sequence) stays uncompiled.
"""
from __future__ import annotations

from transformers import CompileConfig


def fast_decode_kwargs(model, backend: str = "inductor") -> dict:
    """Extra `generate()` keyword arguments for the fast decode path of `model` (on its device).

    backend: torch.compile's backend; "inductor" generates kernels, "eager" only traces the same graph (quick to
    build, for checks that the graph is exact).
    """
    # The eager experts loop iterates over the experts that received tokens, a data-dependent count that cannot
    # be traced: it runs between compiled pieces. The grouped and batched kernels trace into one graph.
    whole_graph = model.config._experts_implementation != "eager"
    # CUDA graphs ("reduce-overhead") remove the per-kernel launch cost that dominates one-token steps on a GPU;
    # they do not exist on a CPU.
    mode = "reduce-overhead" if model.device.type == "cuda" else "default"
    config = CompileConfig(fullgraph=whole_graph, backend=backend, mode=mode)
    # transformers compiles the decode step by itself only on accelerators; here the user has asked for it.
    config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": config}
