"""Parameter accounting, freezing helpers and a training-memory estimate (all work on a meta-device model)."""
from __future__ import annotations

import torch

# Parts of DeepSeekOCRForConditionalGeneration by parameter-name prefix (another backbone names its own: the first
# part whose prefix a name starts with counts it).
PARTS = {
    "sam": ("vision_encoder.sam_model.",),
    "clip": ("vision_encoder.vision_model.",),
    "projector": ("projector.", "image_newline", "view_separator"),
    "embed_tokens": ("language_model.embed_tokens.",),
    "decoder_layers": ("language_model.layers.", "language_model.norm."),
    "lm_head": ("lm_head.",),
}


# The parts every backbone's decoder has (each backbone names its vision parts itself).
DECODER_PARTS = ("embed_tokens", "decoder_layers", "lm_head")


def parameter_counts(model: torch.nn.Module, parts: dict[str, tuple[str, ...]] = PARTS) -> dict[str, int]:
    """Parameters per part, plus `decoder_total` (embed_tokens + layers + final norm + lm_head), `decoder_active`
    and `total`.

    decoder_active = parameters one token's forward pass multiplies with: attention, norms, dense MLPs, each MoE
    layer's router + shared experts + `num_experts_per_tok` of its routed experts, the final norm and lm_head. The
    embedding table is excluded (a row lookup, not a matmul), as in the usual "0.57B active" figure.
    """
    counts = dict.fromkeys(parts, 0)
    routed_total, routed_active = 0, 0
    text = model.config.get_text_config()
    top_k, n_experts = text.num_experts_per_tok, text.n_routed_experts
    for name, param in model.named_parameters():
        part = next(p for p, prefixes in parts.items() if name.startswith(prefixes))
        counts[part] += param.numel()
        if ".mlp.experts." in name:  # packed routed experts: [n_experts, ...]
            routed_total += param.numel()
            routed_active += param.numel() // n_experts * top_k
    counts["decoder_total"] = sum(counts[part] for part in DECODER_PARTS)
    counts["decoder_active"] = counts["decoder_layers"] - routed_total + routed_active + counts["lm_head"]
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def freeze_vision_encoder(model: torch.nn.Module, train_projector: bool = False) -> None:
    """Freeze SAM + CLIP (and, unless `train_projector`, the projector, newline and separator).

    The encoder is put in eval mode and stays there: the model's `train()` re-applies eval to it.
    """
    for param in model.vision_encoder.parameters():
        param.requires_grad_(False)
    for param in (*model.projector.parameters(), model.image_newline, model.view_separator):
        param.requires_grad_(train_projector)
    model.vision_frozen = True
    model.vision_encoder.eval()


def trainable_parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}


def estimate_training_memory(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16,
                             trainable: int | None = None) -> dict[str, int]:
    """Bytes for weights, gradients and AdamW states, activations excluded: every parameter in `dtype`, the
    `trainable` ones (default: those that require grad, LoRA adapters included) with gradients in `dtype`, AdamW's
    two moments in float32 and a float32 master copy when `dtype` is 16-bit."""
    size = torch.finfo(dtype).bits // 8
    weights = sum(p.numel() for p in model.parameters()) * size
    n = trainable if trainable is not None else sum(p.numel() for p in model.parameters() if p.requires_grad)
    master = n * 4 if size < 4 else 0
    result = {"weights": weights + master, "gradients": n * size, "optimizer": n * 8}
    result["total"] = sum(result.values())
    return result
