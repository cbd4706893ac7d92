"""Inference settings of issue 11: the MoE experts implementation chosen at load, and the fast decode path."""
import dataclasses

import pytest

from config import LoadSettings
from inference.api_settings import ServerSettings
from inference.summarizer import DeepSeekSummarizer

TEXT = "Harvests rose across the region while prices held steady. " * 6


def test_experts_implementation_is_applied_and_summaries_agree(tiny_model_dir):
    default = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu"))
    eager = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu",
                                                                      experts_implementation="eager"))
    assert default.backend.model.config._experts_implementation == "grouped_mm"
    assert eager.backend.model.config._experts_implementation == "eager"
    assert eager.summarize_text(TEXT).summary == default.summarize_text(TEXT).summary


def test_compile_setting_asks_generate_for_the_fast_decode_path(tiny_model_dir):
    summarizer = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu"))
    plain = summarizer.generate_kwargs(summarizer.generation)
    fast = summarizer.generate_kwargs(dataclasses.replace(summarizer.generation, compile=True))
    assert "cache_implementation" not in plain and "compile_config" not in plain
    assert fast["cache_implementation"] == "static" and fast["compile_config"].fullgraph
    assert {k: v for k, v in fast.items() if k in plain} == plain


def test_server_reads_the_experts_implementation_from_the_environment():
    assert ServerSettings.from_env({"EXPERTS_IMPLEMENTATION": "batched_mm"}).load.experts_implementation == "batched_mm"
    assert ServerSettings.from_env({}).load.experts_implementation is None
    with pytest.raises(ValueError, match="^environment variable EXPERTS_IMPLEMENTATION must be one of eager, "
                                         "grouped_mm, batched_mm, got 'loop'$"):
        ServerSettings.from_env({"EXPERTS_IMPLEMENTATION": "loop"})
