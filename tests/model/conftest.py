"""Shared fixtures for model tests: the official-format weights (regenerated once per session, ~25 s) and the
reference tensors of tests/fixtures/deepseek_ocr_reference.

Use these fixtures (or import `official_weights` by that name, as pyproject's pythonpath allows) rather than
`tests.fixtures.official_weights`: a second module object would regenerate the weights a second time.
"""
import official_weights
import pytest
import torch

# Fixtures: the export tests export the tiny folder; the source tests classify both under misleading names.
from tests.inference.conftest import seq2seq_model_dir, tiny_model_dir  # noqa: F401


@pytest.fixture(scope="session")
def official_state_dict() -> dict[str, torch.Tensor]:
    """Every official key (with the `model.` prefix) of the fixture model, checksum-verified."""
    return official_weights.official_state_dict()


@pytest.fixture(scope="session")
def reference_tensors() -> dict[str, torch.Tensor]:
    return official_weights.reference_tensors()


@pytest.fixture(scope="session")
def official_config() -> dict:
    return official_weights.official_config()
