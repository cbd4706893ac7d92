"""Test-wide settings: the suite never touches the network and never uses more threads than the machine has.

The fast lane is `pytest -m "not slow"`; plain `pytest` (and CI) runs every test, the `slow` ones too (pyproject's
marker says which those are)."""
import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    """A loopback port free right now (the OS picks it), so parallel runs and busy machines never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def generated(monkeypatch):
    """The new token ids of each row that DeepSeek-OCR's torch `generate` writes during a test, in call order. Each
    call runs to the limit it is given (min_new_tokens = max_new_tokens holds the end token back): what a test
    counts is that limit, never the moment the random tiny model happens to emit its end token."""
    from model.modeling import DeepSeekOCRForConditionalGeneration

    rows: list[list[int]] = []
    generate = DeepSeekOCRForConditionalGeneration.generate

    def to_the_limit(self, *args, **kwargs):
        output = generate(self, *args, **{**kwargs, "min_new_tokens": kwargs["max_new_tokens"]})
        rows.extend(output[:, kwargs["input_ids"].shape[1]:].tolist())
        return output

    monkeypatch.setattr(DeepSeekOCRForConditionalGeneration, "generate", to_the_limit)
    return rows
