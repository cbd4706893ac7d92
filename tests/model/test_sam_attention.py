"""SAM attention attends its queries a few grid rows at a time (model/deep_encoder.py): outputs and gradients equal
the whole-matrix formula of the official code, with one chunk or many, with and without gradients."""
import pytest
import torch

import model.deep_encoder as deep_encoder
from model.deep_encoder import SamAttention, VisionConfig, _rel_pos_table


def whole_matrix_attention(attn: SamAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(scale * q.k + rel_h[q, k_row] + rel_w[q, k_col]) v over the whole (HW)^2 matrix, then proj."""
    batch, height, width, channels = x.shape
    q, k, v = attn.qkv(x).reshape(batch, height * width, 3, attn.heads, -1).permute(2, 0, 3, 1, 4)
    table_h, table_w = _rel_pos_table(attn.rel_pos_h, height), _rel_pos_table(attn.rel_pos_w, width)
    grid_q = q.reshape(batch, attn.heads, height, width, -1)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w)
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, attn.heads, height * width, -1)
    weights = (q @ k.transpose(-2, -1) * attn.scale + bias).softmax(-1)
    return attn.proj((weights @ v).permute(0, 2, 1, 3).reshape(batch, height, width, channels))


@pytest.fixture
def attention():
    torch.manual_seed(0)
    attn = SamAttention(VisionConfig.tiny(), table_size=8)  # global attention, tables resized to the grid
    with torch.no_grad():
        for param in (attn.rel_pos_h, attn.rel_pos_w):
            param.normal_(std=0.5)
    return attn


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk_bytes", [1, 2**30], ids=["one-row-chunks", "one-chunk"])
def test_chunked_attention_equals_the_whole_matrix(attention, monkeypatch, implementation, chunk_bytes):
    monkeypatch.setattr(deep_encoder, "_BIAS_CHUNK_BYTES", chunk_bytes)
    attention.attn_implementation = implementation
    x = torch.randn(2, 12, 10, 32, requires_grad=True)

    with torch.no_grad():  # the reused-buffer path
        torch.testing.assert_close(attention(x), whole_matrix_attention(attention, x), atol=1e-5, rtol=1e-5)

    expected = torch.autograd.grad(whole_matrix_attention(attention, x).square().sum(),
                                   [x, attention.rel_pos_h, attention.rel_pos_w, attention.qkv.weight])
    actual = torch.autograd.grad(attention(x).square().sum(),
                                 [x, attention.rel_pos_h, attention.rel_pos_w, attention.qkv.weight])
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
