"""The presets: models built here with seeded random weights, so every command runs offline on a CPU.

    tiny-random       DeepSeek-OCR's real architecture at tiny widths (DeepSeekOCRConfig.preset)
    tiny-random-ocr2  DeepSeek-OCR-2's (model/backbones/deepseek_ocr2.py)
    tiny-random-bart  a 2-layer BART with a 400-token byte-level BPE trained on the bundled SciTLDR-A training texts

They show that the pipeline works, not summary quality. All are the same in every process (fixed seeds).
"""
from __future__ import annotations

from model.backbones import BACKBONES

TINY_SEQ2SEQ = "tiny-random-bart"
# Preset name -> the task it trains and generates with; each backbone's presets are built by its module.
PRESETS = {**{name: "deepseek-ocr" for backbone in BACKBONES.values() for name in backbone.presets},
           TINY_SEQ2SEQ: "seq2seq"}


def _bundled_texts():
    import json

    from data.dataset_loader import BUNDLED_DIR

    with open(BUNDLED_DIR / "train.jsonl", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            yield " ".join(record["source"]) + " " + " ".join(record["target"])


def build_tiny_bart():
    """(tokenizer, model) of the seq2seq preset."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(_bundled_texts(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
    # 1024 positions: TrainingConfig's default max_source_length fits, as it does for BART itself.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                                        model_max_length=1024)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, forced_bos_token_id=None, forced_eos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tokenizer, BartForConditionalGeneration(config)
