"""The fast decode path (static KV cache + torch.compile of the decode step) gives the default path's greedy ids.

torch.compile runs with its "eager" backend here: dynamo captures the same whole graph (fullgraph) that inductor
would turn into kernels, in seconds instead of minutes on a CPU; `benchmarks.bench_decoder` runs inductor.
"""
import pytest
import torch
from transformers import StaticCache

from model.checkpoint.convert import load_model
from model.fast_decode import fast_decode_kwargs

pytestmark = pytest.mark.slow  # compiled decoding; the fast lane decodes the default way everywhere else

IMAGE = 128815
PAGE_TOKENS = 21  # a 256-pixel page of the tiny preset: 4 rows of (4 tokens + newline) + separator


@pytest.mark.parametrize("experts_implementation", ["grouped_mm", "eager"])
def test_static_compiled_greedy_ids_equal_the_default_path(experts_implementation):
    model = load_model("tiny-random", experts_implementation=experts_implementation)
    prompts = [[0] + [IMAGE] * PAGE_TOKENS + [5, 6, 7, 8, 9], [0] + [IMAGE] * PAGE_TOKENS + [10]]
    width = max(map(len, prompts))  # left padding, as the backends batch
    inputs = {
        "input_ids": torch.tensor([[2] * (width - len(p)) + p for p in prompts]),
        "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
        "pixel_values": torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3)),
    }
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=2)
    with torch.no_grad():
        default = model.generate(**inputs, **settings)
        fast = model.generate(**inputs, **settings, **fast_decode_kwargs(model, backend="eager"),
                              return_dict_in_generate=True)
    assert isinstance(fast.past_key_values, StaticCache)
    assert hasattr(model, "_compiled_call")  # generate really took the compiled decode step
    assert fast.sequences.tolist() == default.tolist()
