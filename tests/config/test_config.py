"""The shared configuration: the README's JSON format loads, and every mistake is named by its key."""
import json

import pytest

from config import (
    PAGE_GEOMETRY,
    ConfigError,
    GenerationSettings,
    LoraConfig,
    RenderConfig,
    TrainingConfig,
    UserError,
    apply_overrides,
    from_dict,
    load_json,
    page_geometry,
    save_json,
    tile_grid,
)

README_CONFIG = {
    "model_name": "deepseek-ai/DeepSeek-OCR",
    "output_dir": "./models/experiment-1",
    "batch_size": 4,
    "num_epochs": 4,
    "gradient_accumulation_steps": 8,
    "max_length": 512,
    "mixed_precision": "bf16",
    "optimizer": {"learning_rate": 2e-5, "weight_decay": 0.01, "warmup_steps": 500},
    "log_interval": 25,
    "save_interval": 1000,
    "push_to_hub": False,
}


def test_readme_config_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(README_CONFIG))
    cfg = load_json(TrainingConfig, path)
    assert cfg.optimizer.learning_rate == 2e-5
    assert cfg.optimizer.warmup_steps == 500
    assert cfg.mixed_precision == "bf16"
    assert cfg.save_interval == 1000


@pytest.mark.parametrize(
    "data, key",
    [
        ({"batch_sise": 4}, "batch_sise"),
        ({"optimizer": {"learning_rat": 1e-4}}, "optimizer.learning_rat"),
        ({"batch_size": "4"}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"push_to_hub": "yes"}, "push_to_hub"),
        ({"optimizer": {"learning_rate": True}}, "optimizer.learning_rate"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"render": {"mode": "huge"}}, "render.mode"),
        ({"optimizer": []}, "optimizer"),
    ],
)
def test_bad_keys_are_named(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_dict(TrainingConfig, data)


def test_integer_is_a_valid_float_but_bool_is_not_an_int():
    assert from_dict(TrainingConfig, {"optimizer": {"max_grad_norm": 1}}).optimizer.max_grad_norm == 1.0
    with pytest.raises(ConfigError):
        from_dict(TrainingConfig, {"batch_size": True})


def test_overrides_beat_the_file_and_unset_flags_do_not(tmp_path):
    cfg = from_dict(TrainingConfig, README_CONFIG)
    cfg = apply_overrides(cfg, {"batch_size": 2, "optimizer.learning_rate": 3e-5, "output_dir": None})
    assert cfg.batch_size == 2 and cfg.optimizer.learning_rate == 3e-5
    assert cfg.output_dir == "./models/experiment-1"
    with pytest.raises(ConfigError, match="batch_size"):
        apply_overrides(cfg, {"batch_size": 0})
    with pytest.raises(ConfigError, match="nothing.here"):
        apply_overrides(cfg, {"nothing.here": 1})


def test_save_and_reload_is_identical(tmp_path):
    cfg = from_dict(TrainingConfig, {**README_CONFIG, "render": {"mode": "tiny", "font_size": 10}})
    save_json(cfg, tmp_path / "resolved.json")
    assert load_json(TrainingConfig, tmp_path / "resolved.json") == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_json(TrainingConfig, tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(TrainingConfig, bad)


def test_push_to_hub_needs_a_repo_id():
    with pytest.raises(ConfigError, match="hub_model_id"):
        from_dict(TrainingConfig, {"push_to_hub": True})


def test_generation_bounds_and_kwargs():
    with pytest.raises(ConfigError, match="num_beams"):
        GenerationSettings(num_beams=0)
    greedy = GenerationSettings(max_new_tokens=64).generate_kwargs()
    assert greedy["do_sample"] is False and "temperature" not in greedy
    sampled = GenerationSettings(temperature=0.7).generate_kwargs()
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7


def test_render_config_rejects_impossible_values():
    for bad in ({"font_size": 2}, {"line_spacing": 0.1}, {"margin": 400, "mode": "tiny"}, {"max_pages": 0}):
        with pytest.raises(ConfigError):
            RenderConfig(**bad)


# Tile grids as the official dynamic_preprocess picks them (fixture case B: 1400x900 -> 3 wide, 2 high).
@pytest.mark.parametrize(
    "size, grid",
    [((1400, 900), (3, 2)), ((640, 640), (1, 1)), ((500, 300), (1, 1)), ((1280, 1920), (2, 3)),
     ((1800, 2400), (2, 3)), ((3000, 1000), (3, 1)), ((700, 700), (2, 2))],
)
def test_tile_grid(size, grid):
    assert tile_grid(*size) == grid


def test_vision_tokens_per_mode():
    v1, v2 = PAGE_GEOMETRY["deepseek-ocr"], PAGE_GEOMETRY["deepseek-ocr-2"]
    assert [v1.vision_tokens(m, 100, 100) for m in ("tiny", "small", "base", "large")] == [64, 100, 256, 400]
    # Gundam: the 1024 global view (256) plus six 640 tiles (100 each).
    assert v1.vision_tokens("gundam", 1280, 1920) == 256 + 6 * 100
    # DeepSeek-OCR-2 (its paper): 144 per 768 px view or tile, 256 per 1024 px view, 256-1,120 per page.
    assert [v2.vision_tokens(m, 100, 100) for m in ("small", "base", "large")] == [144, 256, 256]
    assert v2.vision_tokens("gundam", 1280, 1920) == 256 + 6 * 144 == 1120
    assert v2.positions("gundam", 1280, 1920) == 1121  # and one view separator


def test_a_mode_a_backbone_cannot_read_is_one_line():
    with pytest.raises(UserError, match="DeepSeek-OCR-2 reads pages at small, base, large, gundam, page, not 'tiny'"):
        PAGE_GEOMETRY["deepseek-ocr-2"].positions("tiny", 512, 512)
    with pytest.raises(UserError, match="unknown backbone 'ocr3'"):
        page_geometry("ocr3")


def test_run_settings_round_trip_and_defaults(tmp_path):
    from config import load_run_settings, save_run_settings

    assert load_run_settings(tmp_path) == (RenderConfig(), GenerationSettings())
    render, generation = RenderConfig(mode="tiny", font_size=10), GenerationSettings(num_beams=4)
    save_run_settings(tmp_path / "model", render, generation)
    assert load_run_settings(tmp_path / "model") == (render, generation)


def test_training_runs_on_the_torch_engine_only():
    from config import ConfigError, LoadSettings, TrainingConfig

    with pytest.raises(ConfigError, match="must be torch for training"):
        TrainingConfig(load=LoadSettings(engine="llamacpp"))


def test_text_is_parsed_as_the_declared_type():
    """parse_text, the one reader of text (form fields, environment variables) into a setting's type."""
    from config.loading import parse_text
    from config.settings import LoadSettings

    assert [parse_text(LoraConfig, "enabled", word, "x") for word in ("False", "off", "0", "no", "TRUE", "on")] == [
        False, False, False, False, True, True]
    assert parse_text(LoadSettings, "engine", "llamacpp", "x") == "llamacpp"  # Literal
    assert parse_text(LoadSettings, "experts_implementation", "", "x") is None  # Optional[Literal]: empty is None
    assert parse_text(TrainingConfig, "max_eval_samples", " 12 ", "x") == 12  # Optional[Int]
    assert parse_text(TrainingConfig, "max_eval_samples", "", "x") is None
    assert parse_text(RenderConfig, "line_spacing", "1.5", "x") == 1.5
    assert parse_text(TrainingConfig, "report_to", " none", "x") == " none"  # a string is the text
    for cls, name, word, expected in [(LoraConfig, "enabled", "maybe", "true or false (or 1/0, yes/no, on/off)"),
                                      (LoadSettings, "engine", "vllm", "one of torch, llamacpp"),
                                      (TrainingConfig, "batch_size", "", "an integer"),
                                      (RenderConfig, "line_spacing", "wide", "a number")]:
        with pytest.raises(ConfigError) as refused:
            parse_text(cls, name, word, "the field")
        assert str(refused.value) == f"the field must be {expected}, got {word!r}"
