"""Model folders shaped like the training package's output, built once per session from the tiny presets.

- `tiny_model_dir`: DeepSeek-OCR "tiny-random" weights + processor + render/generation/training settings, with
  render mode "tiny" (512x512 pages) and short summaries so every test stays fast on CPU.
- `seq2seq_model_dir`: a tiny random BART with the DeepSeek tokenizer, as the seq2seq baseline writes it.
"""
import json

import pytest

from config import GenerationSettings, LoadSettings, RenderConfig, save_run_settings

TINY_RENDER = RenderConfig(mode="tiny", font_size=14, max_pages=4)
TINY_GENERATION = GenerationSettings(max_new_tokens=4, batch_size=8)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from model.checkpoint.convert import load_model
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-summarizer")
    load_model("tiny-random").save_pretrained(folder)
    DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode("tiny")).save_pretrained(folder)
    save_run_settings(folder, TINY_RENDER, TINY_GENERATION)
    (folder / "training_config.json").write_text(json.dumps({"task": "deepseek-ocr"}), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def seq2seq_model_dir(tmp_path_factory):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from model.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = load_tokenizer()
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=256, pad_token_id=2, bos_token_id=0, eos_token_id=1,
                        decoder_start_token_id=1, forced_eos_token_id=None)
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_run_settings(folder, RenderConfig(), TINY_GENERATION)
    (folder / "training_config.json").write_text(json.dumps({"source_prefix": "summarize: ",
                                                             "max_source_length": 64}), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def summarizer(tiny_model_dir):
    from inference.summarizer import DeepSeekSummarizer

    return DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu"))


@pytest.fixture(scope="session")
def count_tokens(tiny_model_dir):
    """Tokens of a summary re-tokenized by the folder's own tokenizer (how predictions count generated_tokens).
    Limits are checked on the generated ids themselves (the `generated` fixture of tests/conftest.py)."""
    from model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    return lambda summary: len(tokenizer(summary, add_special_tokens=False).input_ids)
