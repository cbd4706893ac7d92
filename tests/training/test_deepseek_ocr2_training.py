"""DeepSeek-OCR-2 trains through the same trainer: its Qwen2 encoder frozen, LoRA on the decoder's layers only,
a saved folder that summarizes and that transformers' own class loads, a resume that continues the weights."""
import pytest
import torch

from config import LoraConfig, OptimizerConfig, RenderConfig, TrainingConfig
from tests.training.test_collator import bundled_records
from training.deepseek_trainer import DeepSeekOCRTrainer, dry_run_report

pytestmark = pytest.mark.slow  # training runs (the fast lane trains DeepSeek-OCR, through the same trainer)


def ocr2_config(tmp_path, **overrides) -> TrainingConfig:
    settings = dict(
        model_name="tiny-random-ocr2", output_dir=str(tmp_path / "run"), batch_size=2,
        gradient_accumulation_steps=1, max_length=16, gradient_checkpointing=False,
        render=RenderConfig(mode="small"), report_to="none", vision_cache="none",
        optimizer=OptimizerConfig(learning_rate=5e-3, warmup_steps=0, lr_scheduler="constant", weight_decay=0.0),
        log_interval=1, save_interval=2, max_steps=2,
    )
    return TrainingConfig(**{**settings, **overrides})


def test_lora_trains_the_decoder_only_and_the_folder_summarizes(tmp_path):
    from transformers import DeepseekOcr2ForConditionalGeneration

    from config import LoadSettings
    from inference.summarizer import DeepSeekSummarizer

    cfg = ocr2_config(tmp_path, lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    trainer = DeepSeekOCRTrainer.from_config(cfg, bundled_records(2))
    model = trainer.model
    tower = {name: value.clone() for name, value in model.model.vision_tower.state_dict().items()}
    adapted = [name for name, p in model.named_parameters() if p.requires_grad]
    assert adapted and all(".language_model.layers." in name and "lora_" in name for name in adapted)
    trainer.train()
    trainer.save_model()
    assert all(torch.equal(tower[n], v) for n, v in model.model.vision_tower.state_dict().items())
    assert not any(m.training for m in model.model.vision_tower.modules())

    folder = tmp_path / "run"
    DeepseekOcr2ForConditionalGeneration.from_pretrained(folder)  # transformers' own class reads it
    summarizer = DeepSeekSummarizer.from_pretrained(folder, LoadSettings(device="cpu"))
    summarizer.backend.model.generation_config.min_new_tokens = 3  # a random model may end at once
    result = summarizer.summarize_text("A short report on rivers. " * 20, max_new_tokens=3)
    assert result.summary and result.vision_tokens == 144


def test_resume_continues_from_the_checkpoint(tmp_path):
    whole = DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "whole", max_steps=2), bundled_records(2))
    whole.train()
    first = DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "parts", max_steps=1, save_interval=1),
                                           bundled_records(2))
    first.train()
    resumed = DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "parts", max_steps=2, save_interval=1),
                                             bundled_records(2))
    resumed.train(resume_from_checkpoint=True)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dry_run_counts_the_second_backbone(tmp_path):
    report = dry_run_report(ocr2_config(tmp_path))
    assert "SAM + Qwen2 encoder frozen" in report and "qwen2_encoder" in report and "LoRA r=" in report


def test_the_vision_cache_trains_the_weights_the_encoder_does(tmp_path):
    """Two steps over the same two pages: the second reads the first's cached encoder output, and the weights end
    as those of a run that encodes every step."""
    plain = DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "plain"), bundled_records(2))
    plain.train()
    cached = DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "cached", vision_cache="memory"),
                                            bundled_records(2))
    cached.train()
    assert (cached.vision_cache.misses, cached.vision_cache.hits) == (2, 2)
    a, b = plain.model.state_dict(), cached.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], value) for k, value in
               DeepSeekOCRTrainer.from_config(ocr2_config(tmp_path / "fresh"), bundled_records(2)).model.state_dict()
               .items())  # and training changed them
