"""Experiment configs: the shipped ones load and plan; bad ones fail with one line before any work starts; a
stage's identity is what it consumes."""
import json
from pathlib import Path

import pytest

from experiments.config import read_experiment
from experiments.estimate import estimate_table
from experiments.plan import build_plan
from experiments.run import main
from experiments.stages import StageRunner

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs" / "experiments").glob("*.json"))
SMOKE = REPO / "configs" / "experiments" / "smoke-cpu.json"


def test_every_shipped_config_loads_plans_and_estimates(tmp_path):
    assert {p.stem for p in SHIPPED} >= {"smoke-cpu", "cnn-dailymail-lora", "cnn-dailymail-full", "xsum-lora",
                                         "xsum-full"}
    for path in SHIPPED:
        exp = read_experiment(path)
        assert {arm.type for arm in exp.arms} == {"pixels", "text", "seq2seq", "lead-3"}, path
        assert sum(arm.type == "pixels" for arm in exp.arms) >= 2, f"{path}: a sweep needs several pixels arms"
        stages = build_plan(exp, tmp_path / path.stem)
        ids = [s.id for s in stages]
        for stage in stages:  # every stage comes after the stages it reads
            assert all(ids.index(upstream) < ids.index(stage.id) for upstream in stage.after), stage.id
        assert {f"evaluate/{arm.name}" for arm in exp.arms} <= set(ids)
        by_id = {s.id: s for s in stages}
        assert by_id["train/text"].settings.input_mode == "text"
        assert not (tmp_path / path.stem).exists()  # planning writes nothing
        table = estimate_table(exp, {})
        assert "total about" in table and exp.estimate.measured_on in table
        if "cpu" not in path.stem:
            assert any("dry-run" in line and "GiB" in line for line in exp.comment), path


def _write(tmp_path, mutate) -> Path:
    data = json.loads(SMOKE.read_text())
    mutate(data)
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["arms"].append({"name": "ocr", "type": "ocr"}), "arms[5].type"),
    (lambda d: d["arms"][2].update(render={"font_size": 10}), "pixels arms only"),
    (lambda d: d["training"].update(input_mode="text"), "set by the runner"),
    (lambda d: d["training"].update(vision_cache="memory"), "input_mode"),  # the text arm cannot cache pages
    (lambda d: d["dataset"].update(test_samples=100), "test_samples"),
    (lambda d: (d["arms"][3].update(train=False), d["arms"][3].pop("training")), "random weights"),
    (lambda d: d["arms"][3].update(train=False), "would be unused"),
    (lambda d: d["arms"][1].update(name="pixels-12px"), "used twice"),
])
def test_a_bad_config_fails_in_one_line_before_any_work(tmp_path, capsys, mutate, message):
    output = tmp_path / "out"
    # --estimate-only: were the check missing, the test would fail at once instead of running the experiment.
    code = main([str(_write(tmp_path, mutate)), "--output-dir", str(output), "--estimate-only"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not output.exists()


@pytest.mark.parametrize("source, message", [("./no/such/data.jsonl", "dataset not found"),
                                             ("nobody/no-such-dataset", "no-such-dataset")])
def test_a_missing_dataset_fails_in_one_line_before_any_work(tmp_path, capsys, source, message):
    output = tmp_path / "out"
    # A real run (--estimate-only does not look the dataset up): were the check missing, stages would be written.
    code = main([str(_write(tmp_path, lambda d: d["dataset"].update(source=source))), "--output-dir", str(output)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not output.exists()


def test_estimate_only_needs_the_config_alone_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # and the dataset is in no local cache
    config = REPO / "configs" / "experiments" / "cnn-dailymail-lora.json"
    assert main([str(config), "--estimate-only"]) == 0
    printed = capsys.readouterr().out
    assert "Estimated wall time" in printed and "train 600 steps x 6.5 s" in printed and "total about" in printed
    assert list(tmp_path.iterdir()) == []


def test_flags_take_either_spelling_and_an_error_names_the_flag_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "experiments" / "cnn-dailymail-lora.json"
    assert main([str(config), "--estimate_only", "--max_steps", "7", "--output_dir", "exp"]) == 0
    printed = capsys.readouterr().out
    assert "train 7 steps x" in printed and "train 600 steps" not in printed and "in exp" in printed
    assert list(tmp_path.iterdir()) == []
    # The same key from the config file is named as a config key (test_a_bad_config_fails_in_one_line...).
    assert main([str(config), "--estimate_only", "--test_samples", "0"]) == 2
    assert capsys.readouterr().err == "error: argument --test-samples must be at least 1, got 0\n"


def _fingerprints(exp, folder):
    runner = StageRunner(folder)
    for stage in build_plan(exp, folder):
        runner.done(stage)
    return runner.fingerprints


def test_a_generation_setting_is_consumed_by_generate_and_evaluate_only(tmp_path):
    exp = read_experiment(SMOKE)
    before = _fingerprints(exp, tmp_path)
    after = _fingerprints(read_experiment(SMOKE, {"generation.max_new_tokens": 7}), tmp_path)
    changed = {stage for stage in before if before[stage] != after[stage]}
    decoded = [arm.name for arm in exp.arms if arm.type != "lead-3"]
    assert changed == {f"{kind}/{name}" for name in decoded for kind in ("generate", "evaluate")}


def test_a_render_setting_is_consumed_by_that_arms_stages_only(tmp_path):
    before = _fingerprints(read_experiment(SMOKE), tmp_path)
    after = _fingerprints(read_experiment(_write(tmp_path, lambda d: d["arms"][1]["render"].update(font_size=16))),
                          tmp_path)
    assert set(before) - set(after) == {"prepare/pages-tiny-20px"}
    assert set(after) - set(before) == {"prepare/pages-tiny-16px"}
    changed = {stage for stage in set(before) & set(after) if before[stage] != after[stage]}
    assert changed == {f"{kind}/pixels-20px" for kind in ("train", "generate", "evaluate")}


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: config file not found")


def test_page_settings_the_preparation_cannot_make_are_refused(tmp_path, capsys):
    path = _write(tmp_path, lambda d: d["training"]["render"].update(line_spacing=1.5))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--estimate-only"]) == 2
    assert "render key 'line_spacing'" in capsys.readouterr().err
