"""The evaluation tests reuse the tiny summarizer folder the inference tests build (one per session)."""
from tests.inference.conftest import count_tokens, tiny_model_dir  # noqa: F401  (pytest fixtures)
