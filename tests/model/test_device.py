"""One rule for device and precision (model/checkpoint/device.py), shared by training, evaluation and inference."""
import logging
from pathlib import Path

import pytest
import torch

from model.checkpoint import device as device_module
from model.checkpoint.device import (
    DeviceError,
    cpu_has_bf16,
    resolve_device,
    resolve_encoder_precision,
    resolve_precision,
)

CPUINFO = Path("/proc/cpuinfo")


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def bf16_units(request, monkeypatch):
    """The rule's answers on a CPU without and with bf16 matrix units, whatever this machine has."""
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: request.param)
    return request.param


def test_auto_device():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_on_a_cpu_is_a_bf16_encoder_exactly_where_it_has_bf16_units(bf16_units):
    expected = torch.bfloat16 if bf16_units else torch.float32
    assert resolve_encoder_precision("auto", "cpu") == resolve_encoder_precision(None, "cpu") == expected
    assert resolve_precision("auto", "cpu") == resolve_precision(None, "cpu") == torch.float32  # the decoder
    for name in ("no", "float32"):
        assert resolve_precision(name, "cpu") == resolve_encoder_precision(name, "cpu") == torch.float32
    assert resolve_encoder_precision("auto", "cpu", training=True) == torch.float32


def test_auto_loads_a_bf16_encoder_before_a_float32_decoder_and_summarizes(bf16_units, tiny_model_dir, generated):
    from config import LoadSettings
    from inference.summarizer import DeepSeekSummarizer

    summarizer = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu"))
    model = summarizer.backend.model
    assert {p.dtype for p in model.vision_encoder.parameters()} == {torch.bfloat16 if bf16_units else torch.float32}
    assert {p.dtype for p in model.language_model.parameters()} == {torch.float32}
    summary = summarizer.summarize_text("A short note about cats and their long naps.", max_length=6).summary
    assert [len(row) for row in generated] == [6]  # the bf16 pages reach a float32 decoder that generates
    assert summary == summarizer.backend.processor.batch_decode(generated)[0].strip()


def test_training_on_a_cpu_stays_float32(bf16_units, caplog):
    assert resolve_precision("auto", "cpu", training=True) == torch.float32
    with caplog.at_level(logging.WARNING, logger="model.checkpoint.device"):
        assert resolve_precision("bf16", "cpu", training=True) == torch.float32
    assert "using float32 (training on a CPU runs in float32)" in caplog.text


def test_explicit_bf16_is_honoured_on_a_cpu_with_bf16_units(monkeypatch, caplog):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="model.checkpoint.device"):
        assert resolve_precision("bf16", "cpu") == resolve_precision(torch.bfloat16, "cpu") == torch.bfloat16
    assert not caplog.text


@pytest.mark.parametrize("name", ["bf16", "bfloat16", torch.bfloat16])
def test_bf16_on_a_cpu_without_bf16_units_falls_back_with_a_warning(name, monkeypatch, caplog):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="model.checkpoint.device"):
        assert resolve_precision(name, torch.device("cpu")) == torch.float32
    assert "using float32 (bfloat16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16)" in caplog.text


@pytest.mark.parametrize("name", ["fp16", "float16"])
def test_fp16_on_any_cpu_falls_back_with_a_warning(name, bf16_units, caplog):
    with caplog.at_level(logging.WARNING, logger="model.checkpoint.device"):
        assert resolve_precision(name, "cpu") == torch.float32
    assert "using float32 (float16 has no fast kernels on a CPU)" in caplog.text


@pytest.mark.skipif(not CPUINFO.is_file(), reason="/proc/cpuinfo is Linux's")
def test_bf16_detection_agrees_with_the_cpu_flags():
    flags = {flag for line in CPUINFO.read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    assert cpu_has_bf16() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_unknown_names_are_one_line_errors():
    with pytest.raises(DeviceError, match="unknown precision 'int3'"):
        resolve_precision("int3", "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_asked_for_without_cuda():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
