"""The DeepSeek-OCR language model: the official `DeepseekV2Model` with `use_mla=False`.

Correspondence with the official remote code (`modeling_deepseekv2.py`):
- `DeepSeekOCRDecoder` = `DeepseekV2Model` (embed_tokens, layers, norm; no MLA).
- layers = `DeepseekV2DecoderLayer`: transformers' `DeepseekOcr2TextDecoderLayer`, which computes the same function
  (MHA = `LlamaAttention` with rotate-half RoPE, `DeepseekV2MLP` for dense layers, `DeepseekV2MoE` for MoE layers:
  `MoEGate` softmax-greedy router without top-k renormalisation, routed experts packed in 3-D tensors
  `gate_up_proj`/`down_proj`, plus the shared-experts MLP). Parity is checked against the fixture.
- `moe_aux_loss` = the sequence-level balance loss the official `MoEGate` computes in training mode; transformers'
  layers do not compute it, so the router logits are captured with a hook and the loss is recomputed from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
    DeepseekOcr2TextDecoderLayer,
    DeepseekOcr2TextRMSNorm,
    DeepseekOcr2TextRotaryEmbedding,
    DeepseekOcr2TextTopkRouter,
)


def moe_aux_loss(router_logits: torch.Tensor, batch_size: int, top_k: int, alpha: float, seq_aux: bool) -> torch.Tensor:
    """Official `MoEGate` balance loss from one layer's router logits [batch*seq, n_experts].

    seq_aux: per sequence, f_i = (top-k selections of expert i) * n_experts / (seq_len * top_k), P_i = mean routing
    score of expert i; loss = alpha * mean over the batch of sum_i f_i * P_i. Otherwise the same over all tokens.
    """
    scores = router_logits.float().softmax(dim=-1)
    n_experts = scores.shape[-1]
    # Same selection as the router (identical scores, identical topk), so no indices need to be carried around.
    topk_idx = torch.topk(scores, k=top_k, dim=-1, sorted=False).indices
    if seq_aux:
        scores = scores.view(batch_size, -1, n_experts)
        seq_len = scores.shape[1]
        counts = torch.zeros(batch_size, n_experts, device=scores.device)
        counts.scatter_add_(1, topk_idx.view(batch_size, -1), torch.ones(batch_size, seq_len * top_k, device=scores.device))
        f = counts / (seq_len * top_k / n_experts)
        return (f * scores.mean(dim=1)).sum(dim=1).mean() * alpha
    f = nn.functional.one_hot(topk_idx.view(-1), n_experts).float().mean(0) * n_experts
    return (scores.mean(0) * f).sum() * alpha


@dataclass
class DecoderOutput:
    last_hidden_state: torch.Tensor
    past_key_values: Optional[Cache] = None
    hidden_states: Optional[tuple] = None
    aux_loss: Optional[torch.Tensor] = None  # sum over MoE layers; only in training mode
    aux_losses: Optional[list] = None  # per MoE layer, in layer order


class DeepSeekOCRDecoder(nn.Module):
    """Token embeddings, the dense/MoE decoder layers and the final RMSNorm (official `DeepseekV2Model`)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        # Official DeepseekV2Model has no padding_idx (pad_token_id is None there), so the pad row trains too.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DeepseekOcr2TextDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = DeepseekOcr2TextRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DeepseekOcr2TextRotaryEmbedding(config=config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> DecoderOutput:
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0) + past_seen
        causal_mask = create_causal_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            past_key_values=past_key_values, position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        # Like the official MoEGate, the balance loss exists only in training mode with alpha > 0.
        router_logits: list[torch.Tensor] = []
        hooks = []
        if self.training and self.config.aux_loss_alpha > 0:
            hooks = [m.register_forward_hook(lambda _m, _i, out: router_logits.append(out[0]))
                     for m in self.modules() if isinstance(m, DeepseekOcr2TextTopkRouter)]
        all_hidden = []
        hidden = inputs_embeds
        try:
            for layer in self.layers:
                if output_hidden_states:
                    all_hidden.append(hidden)
                hidden = layer(
                    hidden, attention_mask=causal_mask, position_ids=position_ids, past_key_values=past_key_values,
                    use_cache=use_cache, position_embeddings=position_embeddings, **kwargs,
                )
        finally:
            # Removed before backward, so gradient-checkpointing recomputation does not record twice.
            for hook in hooks:
                hook.remove()
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)

        aux_losses = [
            moe_aux_loss(logits, inputs_embeds.shape[0], self.config.num_experts_per_tok,
                         self.config.aux_loss_alpha, self.config.seq_aux)
            for logits in router_logits
        ]
        return DecoderOutput(
            last_hidden_state=hidden,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            aux_loss=torch.stack(aux_losses).sum() if aux_losses else None,
            aux_losses=aux_losses or None,
        )
