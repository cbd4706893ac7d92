"""The seq2seq baseline: argument mapping, learning, ROUGE through evaluate_pairs, one set of generation settings."""
from __future__ import annotations

import json

import pytest
import torch

from config import ConfigError, GenerationSettings, LoadSettings, TrainingConfig, apply_overrides
from tests.training.conftest import TINY_BART
from training.arguments import training_arguments
from training.data import load_jsonl_records


def test_training_arguments_map_the_config(tmp_path):
    cfg = apply_overrides(TrainingConfig(output_dir=str(tmp_path), batch_size=3, max_steps=7, eval_steps=5,
                                         report_to="none", seed=11, log_interval=2, save_interval=4),
                          {"optimizer.learning_rate": 1e-4, "optimizer.lr_scheduler": "cosine"})
    args = training_arguments(cfg)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size, args.max_steps) == (3, 3, 7)
    assert (args.learning_rate, args.lr_scheduler_type.value, args.weight_decay) == (1e-4, "cosine", 0.01)
    assert (args.logging_steps, args.save_steps, args.save_total_limit, args.eval_steps) == (2, 4, 3, 5)
    assert args.eval_strategy.value == "steps" and args.report_to == [] and (args.seed, args.data_seed) == (11, 11)
    assert not args.bf16 and not args.fp16  # "auto" on CPU is float32
    assert args.predict_with_generate and args.remove_unused_columns and args.hub_token is None

    deepseek = training_arguments(TrainingConfig(output_dir=str(tmp_path), task="deepseek-ocr"))
    assert not deepseek.remove_unused_columns and deepseek.eval_strategy.value == "epoch"
    assert training_arguments(cfg, evaluate=False).eval_strategy.value == "no"
    assert training_arguments(TrainingConfig(output_dir=str(tmp_path))).report_to == ["tensorboard"]
    # load.device cpu keeps the Trainer on the CPU; a numbered GPU is the launcher's choice, not a setting.
    assert training_arguments(TrainingConfig(output_dir=str(tmp_path), load=LoadSettings(device="cpu"))).use_cpu
    assert not training_arguments(TrainingConfig(output_dir=str(tmp_path))).use_cpu
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        training_arguments(TrainingConfig(output_dir=str(tmp_path), load=LoadSettings(device="cuda:1")))


def test_baseline_learns_and_decodes_one_way(tmp_path, prepared, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import training.trainer as trainer_module

    calls = []

    def spy(predictions, references, **kwargs):
        calls.append(len(predictions))
        return real(predictions, references, **kwargs)

    real = trainer_module.evaluate_pairs
    monkeypatch.setattr(trainer_module, "evaluate_pairs", spy)
    generation = GenerationSettings(max_new_tokens=6, num_beams=2, no_repeat_ngram_size=2, length_penalty=0.8)
    cfg = TrainingConfig(model_name=TINY_BART, output_dir=str(tmp_path / "out"), batch_size=4, max_steps=16,
                         gradient_accumulation_steps=1, max_length=24, max_source_length=64,
                         gradient_checkpointing=False, log_interval=1, save_interval=100, eval_steps=16,
                         report_to="none", generation=generation)
    cfg = apply_overrides(cfg, {"optimizer.learning_rate": 5e-3, "optimizer.warmup_steps": 0})
    train = load_jsonl_records(prepared / "train.jsonl")
    val = load_jsonl_records(prepared / "val.jsonl")[:4]
    trainer = trainer_module.SummarizationTrainer.from_config(cfg, train, val)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    evals = [h for h in trainer.state.log_history if "eval_rouge1" in h]
    assert evals and calls == [len(val)]  # the in-training evaluation scored through evaluate_pairs

    # The same decoding at the end: trainer predictions == generate() from the saved folder with its defaults.
    trainer.save_model()
    predicted = trainer.predict(trainer.eval_dataset).predictions
    folder = tmp_path / "out"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    batch = tokenizer([r["text"] for r in val], max_length=64, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch)
    decode = lambda ids: [t.strip() for t in tokenizer.batch_decode(  # noqa: E731
        [[i for i in row if i >= 0] for row in ids], skip_special_tokens=True)]
    assert decode(predicted.tolist()) == decode(generated.tolist())
    saved = model.generation_config
    assert (saved.num_beams, saved.no_repeat_ngram_size, saved.length_penalty, saved.max_length) == (2, 2, 0.8, 7)
    assert json.loads((folder / "generation_settings.json").read_text())["num_beams"] == 2
    assert json.loads((folder / "training_config.json").read_text())["model_name"] == TINY_BART


def test_t5_gets_the_summarize_prefix(caplog):
    from training.trainer import source_prefix

    assert source_prefix(TrainingConfig(), "t5") == "summarize: "
    assert source_prefix(TrainingConfig(), "bart") == ""
    with caplog.at_level("WARNING"):
        assert source_prefix(TrainingConfig(source_prefix="tl;dr: "), "t5") == "tl;dr: "
    assert "summarize: " in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback needs a machine without CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])  # bf16: the reference README's config example
def test_half_precision_on_cpu_falls_back_to_float32(tmp_path, precision, caplog):
    with caplog.at_level("WARNING", logger="model.checkpoint.device"):
        args = training_arguments(TrainingConfig(output_dir=str(tmp_path), mixed_precision=precision))
    assert not args.bf16 and not args.fp16 and "using float32" in caplog.text


def test_validation_decodes_with_the_loop_guard_and_its_window_as_inference_does(tmp_path, prepared):
    """A window lets an n-gram recur once it has left the last `window` tokens: transformers' own n-gram block has
    no window, so validation runs the summary's guard, and its summaries are those the summarizer gives."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from inference.summarizer import DeepSeekSummarizer
    from training.trainer import SummarizationTrainer

    generation = GenerationSettings(max_new_tokens=16, no_repeat_ngram_size=1, no_repeat_ngram_window=3)
    cfg = TrainingConfig(model_name=TINY_BART, output_dir=str(tmp_path / "out"), max_source_length=64,
                         report_to="none", generation=generation)
    val = load_jsonl_records(prepared / "val.jsonl")[:3]
    trainer = SummarizationTrainer.from_config(cfg, val, val)
    trainer.save_model()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    predicted = [t.strip() for t in tokenizer.batch_decode(
        [[i for i in row if i >= 0] for row in trainer.predict(trainer.eval_dataset).predictions.tolist()],
        skip_special_tokens=True)]
    summarizer = DeepSeekSummarizer.from_pretrained(tmp_path / "out", LoadSettings(device="cpu", dtype="float32"))
    assert predicted == [summarizer.summarize_text(r["text"]).summary for r in val]
    # The window mattered: transformers' block, windowless, decodes otherwise.
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    batch = tokenizer([r["text"] for r in val], max_length=64, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        windowless = tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True)
    assert [t.strip() for t in windowless] != predicted
