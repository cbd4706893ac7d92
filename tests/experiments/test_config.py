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
LONG = REPO / "configs" / "experiments" / "smoke-long-cpu.json"


def test_every_shipped_config_loads_plans_and_estimates(tmp_path):
    assert {p.stem for p in SHIPPED} >= {"smoke-cpu", "cnn-dailymail-lora", "cnn-dailymail-full", "xsum-lora",
                                         "xsum-full", "govreport-long", "smoke-long-cpu"}
    for path in SHIPPED:
        exp = read_experiment(path)
        types = {arm.type for arm in exp.arms}
        assert {"pixels", "text"} <= types and types & {"lead", "lead-3"}, path
        assert "seq2seq" in types or path.stem in ("smoke-long-cpu", "smoke-v1-vs-v2-cpu"), path  # a random BART adds nothing
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


def _write(tmp_path, mutate, config: Path = SMOKE) -> Path:
    """`config` changed by `mutate`, written as a new config file."""
    data = json.loads(config.read_text())
    mutate(data)
    path = tmp_path / f"changed-{config.name}"
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


def _arm(data, name):
    return next(arm for arm in data["arms"] if arm["name"] == name)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: _arm(d, "text-hierarchical").update(model_of="nope"), "must name another arm"),
    (lambda d: _arm(d, "text-hierarchical").update(model_of="text-hierarchical"), "must name another arm"),
    (lambda d: _arm(d, "text-hierarchical").update(model_of="lead-16"), "trains no model"),
    (lambda d: _arm(d, "text-hierarchical").update(model_of="pixels-small-36px"), "of type pixels"),
    (lambda d: _arm(d, "text-hierarchical").update(training={"max_steps": 3}), "belong to that arm"),
    (lambda d: _arm(d, "text-hierarchical").update(train=False), "belong to that arm"),
    (lambda d: d["arms"].append({"name": "chained", "type": "text", "model_of": "text-hierarchical"}),
     "name 'text'"),
    (lambda d: d["arms"].append({"name": "p", "type": "pixels", "model_of": "pixels-tiny-36px",
                                 "render": {"font_size": 12}}), "belong to that arm"),
    (lambda d: _arm(d, "lead-16").update(sentences=0), "at least 1"),
    (lambda d: _arm(d, "lead-16").update(type="lead-3"), "use type 'lead'"),
    (lambda d: _arm(d, "text").update(sentences=4), "lead arms only"),
    (lambda d: _arm(d, "lead-16").update(model_of="text"), "Lead-N takes no model"),
])
def test_a_bad_model_of_or_lead_arm_fails_in_one_line_before_any_work(tmp_path, capsys, mutate, message):
    output = tmp_path / "out"
    code = main([str(_write(tmp_path, mutate, LONG)), "--output-dir", str(output), "--estimate-only"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not output.exists()


def test_an_arm_reading_another_arms_model_generates_with_it_and_trains_nothing(tmp_path):
    # Listed before the arm it reads: the plan still puts that arm's training first.
    data = json.loads(LONG.read_text())
    data["arms"].insert(0, data["arms"].pop(3))
    exp = read_experiment(_write(tmp_path, lambda d: d.update(arms=data["arms"]), LONG))
    stages = build_plan(exp, tmp_path / "exp")
    ids = [s.id for s in stages]
    by_id = {s.id: s for s in stages}
    assert "train/text-hierarchical" not in ids and ids.index("train/text") < ids.index("generate/text-hierarchical")
    generate = by_id["generate/text-hierarchical"]
    assert generate.after == ["train/text"]
    assert generate.settings.model == str(tmp_path / "exp" / "arms" / "text" / "model")
    assert generate.settings.data_file == by_id["generate/text"].settings.data_file
    assert generate.settings.output == str(tmp_path / "exp" / "arms" / "text-hierarchical" / "predictions.jsonl")
    assert (generate.settings.generation.long_documents, by_id["generate/text"].settings.generation.long_documents) \
        == ("hierarchical", "truncate")
    table = estimate_table(exp, {})
    line = next(line for line in table.splitlines() if "text-hierarchical" in line)
    assert "generate" in line and "train" not in line


def test_a_pixels_arm_reading_another_arms_model_reads_that_arms_pages(tmp_path):
    exp = read_experiment(_write(tmp_path, lambda d: d["arms"].append(
        {"name": "tiny-truncated", "type": "pixels", "model_of": "pixels-tiny-36px",
         "generation": {"long_documents": "truncate"}}), LONG))
    by_id = {s.id: s for s in build_plan(exp, tmp_path / "exp")}
    assert by_id["generate/tiny-truncated"].settings.data_file == by_id["generate/pixels-tiny-36px"].settings.data_file
    assert "pages-tiny-36px" in by_id["generate/tiny-truncated"].settings.data_file


def test_the_model_of_arm_is_redone_when_the_model_it_reads_changes(tmp_path):
    before = _fingerprints(read_experiment(LONG), tmp_path)
    retrained = _fingerprints(read_experiment(LONG, {"training.max_steps": 3}), tmp_path)
    assert before["generate/text-hierarchical"] != retrained["generate/text-hierarchical"]
    regenerated = _fingerprints(read_experiment(_write(tmp_path, lambda d: _arm(d, "text-hierarchical")
                                                            .update(generation={"long_documents": "auto"}), LONG)),
                                tmp_path)
    changed = {stage for stage in before if before[stage] != regenerated[stage]}
    assert changed == {"generate/text-hierarchical", "evaluate/text-hierarchical"}


def test_lead_3_is_evaluations_baseline_and_lead_n_a_predictions_file(tmp_path):
    def leads(data):
        data["arms"] += [{"name": "lead-3", "type": "lead-3"}, {"name": "lead-three", "type": "lead", "sentences": 3}]

    exp = read_experiment(_write(tmp_path, leads, LONG))
    by_id = {s.id: s for s in build_plan(exp, tmp_path / "exp")}
    for name in ("lead-3", "lead-three"):  # the seed's Lead-3, whichever way it is named
        assert f"lead/{name}" not in by_id
        job = by_id[f"evaluate/{name}"].settings
        assert job.baseline == "lead-3" and job.predictions is None
    job = by_id["evaluate/lead-16"].settings
    assert job.baseline is None and job.predictions == str(tmp_path / "exp" / "arms" / "lead-16" / "predictions.jsonl")
    assert by_id["evaluate/lead-16"].after == ["references/test", "lead/lead-16"]


def test_the_lead_n_stage_writes_evaluations_lead_n_of_every_reference(tmp_path):
    from evaluation.metrics import lead_n

    exp = read_experiment(LONG)
    folder = tmp_path / "exp"
    stage = {s.id: s for s in build_plan(exp, folder)}["lead/lead-16"]
    texts = [" ".join(f"Sentence {i} of document {d} ends here." for i in range(20)) for d in range(3)]
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "references.jsonl").write_text(
        "".join(json.dumps({"id": f"d{d}", "text": text, "summary": "s"}) + "\n" for d, text in enumerate(texts)))
    stage.work(False)
    lines = [json.loads(line) for line in (folder / "arms" / "lead-16" / "predictions.jsonl").read_text().splitlines()]
    assert lines == [{"id": f"d{d}", "prediction": lead_n(text, 16)} for d, text in enumerate(texts)]
    assert all(len(line["prediction"].splitlines()) == 16 for line in lines)


def test_the_synthetic_long_source_needs_no_hub(monkeypatch):
    from experiments.config import DatasetSpec, check_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    check_dataset(DatasetSpec(source="bundled-long"))  # were it taken for a hub id: "not in the local cache"


@pytest.mark.parametrize("arm, message", [
    # The smoke config's tiny pages.
    ({"name": "v2-tiny", "type": "pixels", "backbone": "deepseek-ocr-2"}, "its views are 768 and 1024 px"),
    ({"name": "v2-reader", "type": "pixels", "model_of": "pixels-12px", "backbone": "deepseek-ocr-2"},
     "reads the model of arm 'pixels-12px' as trained"),
    ({"name": "v3", "type": "pixels", "backbone": "deepseek-ocr-3"},
     ".backbone': input should be 'deepseek-ocr' or 'deepseek-ocr-2', got 'deepseek-ocr-3'"),
])
def test_a_backbone_an_arm_cannot_have_is_refused_before_anything_runs(tmp_path, capsys, arm, message):
    path = _write(tmp_path, lambda d: d["arms"].append(arm))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--estimate-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
