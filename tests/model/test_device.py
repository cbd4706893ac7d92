"""One rule for device and precision (model/device.py), shared by training, evaluation and inference."""
import logging

import pytest
import torch

from model.checkpoint.device import DeviceError, resolve_device, resolve_precision


def test_auto_device_and_precision():
    device = resolve_device(None)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", "cpu") == torch.float32
    assert resolve_precision(None, "cpu") == torch.float32
    assert resolve_precision("no", "cpu") == resolve_precision("float32", "cpu") == torch.float32


@pytest.mark.parametrize("name", ["bf16", "bfloat16", "fp16", "float16", torch.bfloat16])
def test_half_precision_on_cpu_falls_back_with_a_warning(name, caplog):
    with caplog.at_level(logging.WARNING, logger="model.checkpoint.device"):
        assert resolve_precision(name, torch.device("cpu")) == torch.float32
    assert "using float32" in caplog.text


def test_unknown_names_are_one_line_errors():
    with pytest.raises(DeviceError, match="unknown precision 'int3'"):
        resolve_precision("int3", "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_asked_for_without_cuda():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
