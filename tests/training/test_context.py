"""The decoder's context in training: no sequence past it reaches the model; records longer than it are left out
and counted, never cut; settings that can never fit are one-line errors; prepare counts such records too.

A tiny-random model whose context is 200 positions makes it fast: a tiny-mode page takes 73 positions, the prompt's
BOS and instruction 7 and a summary at most 24, so a bundled abstract (one page) fits and the same abstract eight
times over (three pages and more) does not.
"""
import json
from pathlib import Path

import pytest

from config import ConfigError, OptimizerConfig, RenderConfig, TrainingConfig
from config.jobs import PrepareJob
from inference.backends import ContextExceeded
from tests.training.conftest import TINY_BART
from tests.training.test_collator import bundled_records
from training.collator import DeepSeekOCRCollator

CONTEXT = 200


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> Path:
    from model.checkpoint.convert import load_model

    folder = tmp_path_factory.mktemp("short-context")
    model = load_model("tiny-random")
    model.config.max_position_embeddings = CONTEXT
    model.save_pretrained(folder)
    return folder


def long_record(record: dict) -> dict:
    return {**record, "id": record["id"] + "-long", "text": "\n\n".join([record["text"]] * 8)}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def config(tmp_path, model, **overrides) -> TrainingConfig:
    settings = dict(
        model_name=str(model), task="deepseek-ocr", output_dir=str(tmp_path / "run"), batch_size=2,
        gradient_accumulation_steps=1, max_length=24, gradient_checkpointing=False, render=RenderConfig(mode="tiny"),
        report_to="none", optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=0), log_interval=1,
        save_interval=1000,
    )
    return TrainingConfig(**{**settings, **overrides})


@pytest.fixture
def forwards(monkeypatch) -> list[int]:
    """The sequence length of every forward pass of DeepSeek-OCR during a test."""
    from model.modeling import DeepSeekOCRForConditionalGeneration

    lengths: list[int] = []
    forward = DeepSeekOCRForConditionalGeneration.forward

    def recorded(self, *args, **kwargs):
        lengths.append(kwargs["input_ids"].shape[1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(DeepSeekOCRForConditionalGeneration, "forward", recorded)
    return lengths


def built_length(collator: DeepSeekOCRCollator, record: dict) -> int:
    """The length of the sequence the collator really builds for one record (no context check)."""
    unchecked = DeepSeekOCRCollator(collator.processor, collator.render, collator.max_target_length)
    return int(unchecked([record])["attention_mask"].sum())


def test_records_longer_than_the_context_are_left_out_counted_and_never_reach_the_model(
        tmp_path, short_context_model, forwards, capsys):
    from training.train import train

    short = bundled_records(4)
    train_records = [short[0], long_record(short[1]), short[2], long_record(short[3]), short[1]]
    val_records = [short[3], long_record(short[0])]
    cfg = config(tmp_path, short_context_model, max_steps=3, eval_steps=3,
                 train_file=str(write_jsonl(tmp_path / "train.jsonl", train_records)),
                 val_file=str(write_jsonl(tmp_path / "val.jsonl", val_records)))
    result = train(cfg)

    assert forwards and max(forwards) <= CONTEXT, forwards
    assert result.context == CONTEXT and result.over_context == {"train": 2, "val": 1}
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("left out"))
    assert "2 of 5 training and 1 of 2 validation records" in line and f"context of {CONTEXT} positions" in line
    card = (tmp_path / "run" / "README.md").read_text()
    assert "3 training and 1 validation records; left out as longer than the decoder's context of 200 positions: " \
           "2 training and 1 validation records" in card


def test_what_is_left_out_is_what_would_run_past_the_context(tmp_path, short_context_model):
    from training.deepseek_trainer import DeepSeekOCRTrainer

    short = bundled_records(3)
    records = [short[0], long_record(short[1]), short[2]]
    trainer = DeepSeekOCRTrainer.from_config(config(tmp_path, short_context_model), records)
    lengths = [built_length(trainer.data_collator, record) for record in records]
    assert [length <= CONTEXT for length in lengths] == [True, False, True], lengths
    assert [record["id"] for record in trainer.train_dataset] == [short[0]["id"], short[2]["id"]]
    assert trainer.over_context == {"train": 1} and trainer.context == CONTEXT


def test_a_split_with_no_record_within_the_context_is_one_line(tmp_path, short_context_model):
    from training.data import TrainDataError
    from training.deepseek_trainer import DeepSeekOCRTrainer

    with pytest.raises(TrainDataError, match=f"every training record is longer than the decoder's context of "
                                             f"{CONTEXT} positions"):
        DeepSeekOCRTrainer.from_config(config(tmp_path, short_context_model), [long_record(bundled_records(1)[0])])


def test_the_collator_refuses_a_batch_past_the_context():
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    processor = DeepSeekOCRProcessor(load_tokenizer(None), DeepSeekOCRImageProcessor.from_mode("tiny"))
    collator = DeepSeekOCRCollator(processor, RenderConfig(mode="tiny"), 24, context=CONTEXT)
    short = bundled_records(1)[0]
    assert collator([short])["input_ids"].shape[1] <= CONTEXT
    with pytest.raises(ContextExceeded, match=f"exceeds the decoder's context of {CONTEXT}"):
        collator([short, long_record(short)])


def test_text_input_that_cannot_fit_is_refused_before_the_weights_load(tmp_path, short_context_model, monkeypatch):
    from training import deepseek_trainer

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were loaded before the settings were checked")

    monkeypatch.setattr(deepseek_trainer, "load_pretrained", no_loading)
    cfg = config(tmp_path, short_context_model, input_mode="text", max_source_length=CONTEXT - 24 - 7 + 1)
    with pytest.raises(ConfigError) as caught:
        deepseek_trainer.DeepSeekOCRTrainer.from_config(cfg, bundled_records(2))
    message = str(caught.value)
    assert "\n" not in message and f"context of {CONTEXT}" in message
    assert f"make {CONTEXT + 1}" in message and f"add up to {CONTEXT - 7} at most" in message


def test_text_input_that_fits_trains_every_record_cut_to_max_source_length(tmp_path, short_context_model, forwards):
    from training.deepseek_trainer import DeepSeekOCRTrainer

    cfg = config(tmp_path, short_context_model, input_mode="text", max_source_length=CONTEXT - 24 - 7, max_steps=1)
    records = [long_record(record) for record in bundled_records(2)]
    trainer = DeepSeekOCRTrainer.from_config(cfg, records)
    trainer.train()
    assert len(trainer.train_dataset) == 2 and trainer.over_context == {"train": 0}
    assert forwards and max(forwards) <= CONTEXT and trainer.truncated_sources == 2


@pytest.mark.parametrize("key, value, message", [
    ("max_source_length", 1025, "config key 'max_source_length' is 1025, but"),
    ("max_length", 2048, "config key 'max_length' is 2048, but"),
])
def test_seq2seq_lengths_past_the_models_positions_are_one_line(tmp_path, prepared, key, value, message, capsys):
    from training.train import main

    settings = tmp_path / "c.json"
    settings.write_text(json.dumps({key: value}))
    argv = ["--config", str(settings), "--train", str(prepared / "train.jsonl"), "--model-name", TINY_BART,
            "--output", str(tmp_path / "o"), "--report-to", "none", "--max-steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "reads at most 1024" in err[0], err
    assert main(argv + ["--dry-run"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("images, backbone", [(True, "deepseek-ocr"), (False, "deepseek-ocr"),
                                             (True, "deepseek-ocr-2")])
def test_prepare_counts_positions_as_training_builds_them(tmp_path, images, backbone):
    """Prepare's count (data may not import the model) agrees with the collator at training's defaults, for the
    backbone prepare was told."""
    from data.jsonl import read_jsonl
    from data.prepare_datasets import ContextCount, prepare
    from model import backbones
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer
    from training.data import load_jsonl_records

    render = RenderConfig(mode="gundam")
    abstracts = bundled_records(4)
    book = {**abstracts[0], "id": "book", "text": "\n\n".join(record["text"] for record in bundled_records(40))}
    source = write_jsonl(tmp_path / "docs.jsonl", [*abstracts, book])
    job = PrepareJob(source=str(source), output_dir=str(tmp_path / "p"), generate_images=images, workers=1,
                     render=render, backbone=backbone)
    prepare(job, progress=False)
    defaults = TrainingConfig()
    processor = DeepSeekOCRProcessor(load_tokenizer(None), backbones.named(backbone).page_processor(render.mode),
                                     defaults.instruction)
    collator = DeepSeekOCRCollator(processor, render, defaults.max_length)
    counter = ContextCount(render, backbone)
    pages = []
    for split in ("train", "val", "test"):
        path = tmp_path / "p" / f"{split}.jsonl"
        for raw, record in zip(read_jsonl(path), load_jsonl_records(path) if path.stat().st_size else []):
            assert counter.positions(raw) == collator.sequence_length(record) == built_length(collator, record)
            pages.append(len(collator.page_sizes(record)))
    assert len(pages) == 5 and max(pages) > 1  # the book takes several pages
