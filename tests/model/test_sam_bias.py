"""SAM's relative-position bias has two builders (model/deep_encoder.py): a broadcast sum, and for short key rows a
matrix product with one-hot key coordinates. They give the same bias bit for bit, and attention is the official
whole-matrix formula with either."""
import pytest
import torch

import model.deep_encoder as deep_encoder
from model.deep_encoder import SamAttention, VisionConfig, _bias_by_add, _bias_by_matmul
from tests.model.test_sam_attention import whole_matrix_attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matmul_bias_equals_the_broadcast_sum_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(0)
    rel_h = (torch.randn(2, 3, 5, 7, 5, generator=generator) * 4).to(dtype)
    rel_w = (torch.randn(2, 3, 5, 7, 7, generator=generator) * 4).to(dtype)
    expected = _bias_by_add(rel_h, rel_w, None)  # [.., query row, query column, key row, key column]
    assert torch.equal(_bias_by_matmul(rel_h, rel_w, None), expected.flatten(-2))
    out = torch.empty_like(expected)
    assert _bias_by_matmul(rel_h, rel_w, out).data_ptr() == out.data_ptr() and torch.equal(out, expected)


@pytest.mark.parametrize("min_add_row", [0, 10**6], ids=["sum", "matmul"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_with_either_builder_equals_the_whole_matrix(monkeypatch, min_add_row, implementation):
    monkeypatch.setattr(deep_encoder, "_MIN_ADD_ROW", min_add_row)
    monkeypatch.setattr(deep_encoder, "_BIAS_CHUNK_BYTES", 1)  # one grid row a chunk: a reused buffer
    torch.manual_seed(0)
    attention = SamAttention(VisionConfig.tiny(), table_size=8)
    attention.attn_implementation = implementation
    with torch.no_grad():
        for param in (attention.rel_pos_h, attention.rel_pos_w):
            param.normal_(std=0.5)
    x = torch.randn(2, 6, 9, 32, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(attention(x), whole_matrix_attention(attention, x), atol=1e-5, rtol=1e-5)
    expected = torch.autograd.grad(whole_matrix_attention(attention, x).square().sum(), [x, attention.rel_pos_w])
    actual = torch.autograd.grad(attention(x).square().sum(), [x, attention.rel_pos_w])
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
