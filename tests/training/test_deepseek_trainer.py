"""DeepSeekOCRTrainer on tiny-random: overfitting, a frozen encoder, LoRA, the saved folder, the dry run."""
import time

import pytest
import torch
from PIL import Image

from config import ConfigError, LoraConfig, OptimizerConfig, RenderConfig, TrainingConfig
from inference.inputs import InputError
from model.checkpoint.convert import load_model
from model.processing import REPORTING_KEYS
from tests.training.test_collator import bundled_records
from training.deepseek_trainer import DeepSeekOCRTrainer, build_model, dry_run_report


def tiny_config(tmp_path, **overrides) -> TrainingConfig:
    settings = dict(
        model_name="tiny-random", output_dir=str(tmp_path / "run"), batch_size=2, gradient_accumulation_steps=1,
        max_length=24, gradient_checkpointing=False, render=RenderConfig(mode="tiny"), report_to="none",
        optimizer=OptimizerConfig(learning_rate=5e-3, warmup_steps=0, lr_scheduler="constant", weight_decay=0.0),
        log_interval=5, save_interval=1000,
    )
    return TrainingConfig(**{**settings, **overrides})


def encoder_state(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.vision_encoder.state_dict().items()}


@pytest.mark.slow  # trains until the model has learned two examples
def test_overfits_two_examples_with_a_frozen_encoder(tmp_path):
    # max_length 16 cuts both summaries: the truncation counter is checked on the way.
    cfg = tiny_config(tmp_path, max_steps=60, vision_cache="memory", max_length=16)
    trainer = DeepSeekOCRTrainer.from_config(cfg, bundled_records(2))
    model = trainer.model
    before, projector = encoder_state(model), model.projector.weight.clone()
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["loss"] < 0.5 < 5 < logs[0]["loss"], logs
    assert all("ce_loss" in entry and entry["aux_loss"] > 0 for entry in logs)  # MoE balance loss takes part
    assert logs[-1]["truncated_targets"] == 2 * 60
    after = model.vision_encoder.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not any(module.training for module in model.vision_encoder.modules())
    assert torch.equal(model.projector.weight, projector)  # frozen by default
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.vision_encoder.parameters()}
    assert not any(id(p) in trainer.optimizer.state for p in model.vision_encoder.parameters())
    assert trainer.vision_cache.misses == 2  # the encoder ran once per document


def test_projector_trains_only_with_the_flag(tmp_path):
    frozen, _ = build_model(tiny_config(tmp_path))
    trained, _ = build_model(tiny_config(tmp_path, train_projector=True))
    assert not frozen.projector.weight.requires_grad and not frozen.image_newline.requires_grad
    assert trained.projector.weight.requires_grad and trained.view_separator.requires_grad
    for model in (frozen, trained):
        assert not any(p.requires_grad for p in model.vision_encoder.parameters())
        assert all(p.requires_grad for p in model.language_model.parameters())


def test_lora_trains_adapters_only_and_saves_a_loadable_merged_folder(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=3, gradient_checkpointing=True,
                      lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    records = bundled_records(2)
    trainer = DeepSeekOCRTrainer.from_config(cfg, records)
    model = trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name and name.startswith("language_model.layers.") for name in trainable)
    frozen_before = {name: p.clone() for name, p in model.named_parameters() if not p.requires_grad}
    trainer.train()
    assert all(torch.equal(p, frozen_before[name]) for name, p in model.named_parameters() if not p.requires_grad)

    trainer.save_model()
    folder = tmp_path / "run"
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
            "render_config.json", "generation_settings.json"} <= {p.name for p in folder.iterdir()}
    batch = trainer.data_collator(records)
    for key in (*REPORTING_KEYS, "page_keys"):
        batch.pop(key, None)
    loaded = load_model(str(folder))
    with torch.no_grad():
        expected = model.eval()(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=1e-4, atol=1e-4)


def test_dry_run_report_for_the_real_model_is_fast():
    start = time.perf_counter()
    report = dry_run_report(TrainingConfig())
    assert time.perf_counter() - start < 10
    assert "3,335,504,128" in report  # every parameter of DeepSeek-OCR
    assert "full decoder" in report and "LoRA r=16" in report and "GiB" in report
    full, lora = report.splitlines()[-2:]
    assert int(full.split()[2].replace(",", "")) > 2_900_000_000  # decoder trainable
    assert int(lora.split()[2].replace(",", "")) < 10_000_000  # adapters only
    assert float(full.split()[-1]) > 5 * float(lora.split()[-1])


@pytest.mark.slow  # a whole run, saved and reloaded
def test_text_input_trains_on_text_tokens_and_the_saved_folder_reads_text(tmp_path):
    from inference.summarizer import DeepSeekSummarizer
    from model.tokenizer import IMAGE_TOKEN_ID

    # max_source_length 40 cuts both documents: the source truncation counter is checked on the way.
    cfg = tiny_config(tmp_path, max_steps=40, input_mode="text", max_source_length=40, log_interval=10)
    records = bundled_records(2)
    trainer = DeepSeekOCRTrainer.from_config(cfg, records)
    batch = trainer.data_collator(records)
    assert "pixel_values" not in batch and not (batch["input_ids"] == IMAGE_TOKEN_ID).any()
    assert batch["source_truncated"].tolist() == [True, True]
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["loss"] < 0.5 < 5 < logs[0]["loss"], logs
    assert logs[-1]["truncated_sources"] == 2 * 40

    trainer.save_model()
    summarizer = DeepSeekSummarizer.from_pretrained(tmp_path / "run")
    assert not summarizer.backend.reads_images
    result = summarizer.summarize_text(records[0]["text"], max_length=4)
    assert result.pages == 0 and result.vision_tokens is None and result.text_tokens > 40
    with pytest.raises(InputError):
        summarizer.summarize_image(Image.new("RGB", (64, 64), "white"))


def test_text_input_rules_out_page_only_settings(tmp_path):
    for contradiction in ({"vision_cache": "memory"}, {"train_projector": True}):
        with pytest.raises(ConfigError, match="input_mode"):
            tiny_config(tmp_path, input_mode="text", **contradiction)
