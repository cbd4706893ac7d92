"""The smoke experiment end to end, offline: a kill and a resume, every arm scored, the report true to the stage
outputs and to the commands it prints, and reruns that redo exactly the stages whose inputs changed."""
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.run import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "experiments" / "smoke-cpu.json"
# The experiment lives in a folder relative to the working folder, so a copy of the working folder is the same
# experiment (same stage fingerprints) for the rerun tests.
ARGS = ["smoke.json", "--output-dir", "experiment", "--max-samples", "4", "--test-samples", "2", "--max-steps", "2"]
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def small_smoke(folder: Path) -> None:
    """The shipped smoke config with the in-training evaluation and decoding cut to a token or two (CI time),
    evaluating after each of the two steps so the report has a first and a last validation loss."""
    data = json.loads(SMOKE.read_text())
    quick = {"max_eval_samples": 1, "batch_size": 2, "log_interval": 1, "eval_steps": 1}
    data["training"].update(quick)
    for arm in data["arms"]:
        if arm["type"] == "seq2seq":
            arm["training"].update(quick)
    data["generation"].update(max_new_tokens=4, batch_size=2)
    data["bootstrap"] = 100
    (folder / "smoke.json").write_text(json.dumps(data))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout} s"
        time.sleep(0.2)


def _run_in(folder: Path) -> tuple[int, str]:
    """`python -m experiments.run ARGS` in this process with `folder` as working folder: (status, stdout)."""
    printed = io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(printed):
        code = main(ARGS)
    return code, printed.getvalue()


def _markers(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (folder / "experiment" / "stages").glob("*.json")
            if not p.name.endswith(".started.json")}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The small smoke experiment killed once its first training stage finished, then run again to the end."""
    work = tmp_path_factory.mktemp("smoke")
    small_smoke(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *ARGS], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(work / "experiment" / "stages" / "train__pixels-12px.json", proc, timeout=600)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stages = work / "experiment" / "stages"
    finished = _markers(work)
    interrupted = [json.loads(p.read_text()) for p in stages.glob("*.started.json")]
    code, printed = _run_in(work)
    assert code == 0, printed
    out = work / "experiment"
    return SimpleNamespace(work=work, out=out, finished=finished, interrupted=interrupted, printed=printed,
                           results=json.loads((out / "results.json").read_text()),
                           table=(out / "results.md").read_text())


@pytest.mark.slow
def test_smoke_experiment_resumes_after_a_kill_without_redoing_finished_stages(smoke_run):
    stages = smoke_run.out / "stages"
    assert {"prepare__text.json", "train__pixels-12px.json"} <= set(smoke_run.finished)
    for name, text in smoke_run.finished.items():  # finished stages are neither redone nor rewritten
        assert (stages / name).read_text() == text
        assert f"==> {json.loads(text)['stage']}: done earlier" in smoke_run.printed
    assert len(smoke_run.interrupted) <= 1
    assert smoke_run.printed.count("(continuing an interrupted run)") == len(smoke_run.interrupted)
    assert not list(stages.glob("*.started.json"))


@pytest.mark.slow
def test_smoke_experiment_scores_every_arm_on_the_same_documents(smoke_run):
    results, out = smoke_run.results, smoke_run.out
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert list(arms) == [arm["name"] for arm in json.loads((smoke_run.work / "smoke.json").read_text())["arms"]]
    references = [json.loads(line)["id"] for line in (out / "data" / "references.jsonl").read_text().splitlines()]
    assert len(references) == 2
    for arm in arms.values():
        per_example = (out / "arms" / arm["name"] / "per_example.jsonl").read_text().splitlines()
        assert [json.loads(line)["id"] for line in per_example] == references, arm["name"]
        assert arm["documents"] == 2 and arm["missing_predictions"] == 0
        if arm["type"] != "lead-3":
            assert arm["train_seconds"] > 0 and arm["train_steps"] == 2 and arm["generation_seconds"] > 0
    # The sweep: a larger font needs more pages, so fewer text tokens per vision token; text is read at 1x.
    assert arms["pixels-12px"]["compression_ratio"] > arms["pixels-20px"]["compression_ratio"] > 1
    assert arms["text"]["compression_ratio"] == 1.0 and arms["text"]["vision_tokens"] is None
    assert arms["pixels-12px"]["vision_tokens"] >= 64

    # The text arm really read text: its model says so, and generation saw no pages.
    text_arm = out / "arms" / "text"
    assert json.loads((text_arm / "model" / "processor_config.json").read_text())["input_mode"] == "text"
    predictions = [json.loads(line) for line in (text_arm / "predictions.jsonl").read_text().splitlines()]
    assert [(p["pages"], p["vision_tokens"]) for p in predictions] == [(0, None), (0, None)]
    assert (out / "rouge_vs_compression.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_results_table_rows_are_the_metrics_files(smoke_run):
    table = smoke_run.table
    assert "CPU smoke run" in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for arm in smoke_run.results["arms"]:
        metrics = json.loads((smoke_run.out / "arms" / arm["name"] / "metrics.json").read_text())
        system = metrics["systems"]["lead-3" if arm["type"] == "lead-3" else "model"]
        assert arm["scores"] == system["scores"] and arm["intervals"] == system["intervals"]
        cells = rows[arm["name"]].strip("| ").split(" | ")
        assert cells[2:6] == [f"{system['scores'][m]:.2f}" for m in METRICS], cells
        if arm["type"] != "lead-3":
            empty = metrics["counts"].get("empty_predictions", 0)
            assert cells[7] == f"{empty}/{metrics['counts']['examples']}"


@pytest.mark.slow
def test_report_shows_the_first_and_last_validation_loss_of_each_trained_arm(smoke_run):
    rows = {line.split(" | ")[0].lstrip("| "): line for line in smoke_run.table.splitlines() if line.startswith("| ")}
    for arm in smoke_run.results["arms"]:
        if arm["type"] == "lead-3":
            assert arm["val_losses"] is None
            continue
        state = json.loads((smoke_run.out / "arms" / arm["name"] / "model" / "trainer_state.json").read_text())
        logged = [[h["step"], h["eval_loss"]] for h in state["log_history"] if "eval_loss" in h]
        assert arm["val_losses"] == logged and [step for step, _ in logged] == [1, 2], arm["name"]
        (_, first), (_, last) = logged[0], logged[-1]
        assert f"{first:.3f} (step 1) -> {last:.3f} (step 2)" in rows[arm["name"]]


@pytest.mark.slow
def test_evaluate_commands_in_results_md_reproduce_the_metrics(smoke_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke_run.work, work)
    commands = [line.split("`")[1] for line in smoke_run.table.splitlines() if line.startswith("| evaluate/")]
    assert len(commands) == len(smoke_run.results["arms"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "evaluation.evaluate"], command
        output = work / argv[argv.index("--output") + 1]
        output.unlink()
        subprocess.run([sys.executable, *argv[1:]], cwd=work, env=env, check=True, capture_output=True)
        # Everything: scores, intervals, counts, lengths, the settings (bootstrap resamples...), the inputs.
        assert output.read_text() == (smoke_run.work / output.relative_to(work)).read_text(), command


def _rerun(smoke_run, tmp_path, mutate) -> tuple[dict[str, str], dict[str, str], str]:
    """A copy of the finished experiment run again after `mutate(config)`: markers before, after, stdout."""
    work = tmp_path / "work"
    shutil.copytree(smoke_run.work, work)
    data = json.loads((work / "smoke.json").read_text())
    mutate(data)
    (work / "smoke.json").write_text(json.dumps(data))
    before = _markers(work)
    code, printed = _run_in(work)
    assert code == 0, printed
    return before, _markers(work), printed


def _redone(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {json.loads(text)["stage"] for name, text in after.items() if before.get(name) != text}


@pytest.mark.slow
def test_a_changed_generation_setting_retrains_nothing_and_regenerates_every_arm(smoke_run, tmp_path):
    before, after, printed = _rerun(smoke_run, tmp_path, lambda d: d["generation"].update(max_new_tokens=3))
    decoded = [arm["name"] for arm in smoke_run.results["arms"] if arm["type"] != "lead-3"]
    assert _redone(before, after) == {f"{kind}/{name}" for name in decoded for kind in ("generate", "evaluate")}
    for name in decoded:
        assert f"==> train/{name}: done earlier" in printed
        settings = json.loads((tmp_path / "work" / "experiment" / "arms" / name / "predictions.jsonl.settings.json")
                              .read_text())
        assert settings["generation"]["max_new_tokens"] == 3
        # The arm's model folder now decodes as its predictions were made (the train stage was not rerun).
        model = tmp_path / "work" / "experiment" / "arms" / name / "model"
        assert json.loads((model / "generation_settings.json").read_text())["max_new_tokens"] == 3
    bart = tmp_path / "work" / "experiment" / "arms" / "bart-tiny" / "model"
    assert json.loads((bart / "generation_config.json").read_text())["max_length"] == 3 + 1  # + decoder start


@pytest.mark.slow
def test_a_changed_font_size_redoes_that_arm_only(smoke_run, tmp_path):
    def larger_font(data):
        next(arm for arm in data["arms"] if arm["name"] == "pixels-20px")["render"]["font_size"] = 16

    before, after, printed = _rerun(smoke_run, tmp_path, larger_font)
    assert _redone(before, after) == {"prepare/pages-tiny-16px", "train/pixels-20px", "generate/pixels-20px",
                                      "evaluate/pixels-20px"}
    model = tmp_path / "work" / "experiment" / "arms" / "pixels-20px" / "model"
    assert json.loads((model / "render_config.json").read_text())["font_size"] == 16


@pytest.mark.slow
def test_a_run_killed_as_a_changed_arm_starts_training_gives_a_clean_runs_results(smoke_run, tmp_path,
                                                                                   monkeypatch):
    """The user's case: a render change, the run killed the moment `==> train/<arm>` prints, then rerun. The
    rerun must train the new arm from scratch, never resume the old run's finished checkpoint."""
    def smaller_font(data):
        next(arm for arm in data["arms"] if arm["name"] == "pixels-20px")["render"]["font_size"] = 14

    _, clean, _ = _rerun(smoke_run, tmp_path / "clean", smaller_font)

    import training.train

    train = training.train.train

    def killed(*args, **kwargs):  # the stage's started marker is written; nothing of the new run is
        raise KeyboardInterrupt

    monkeypatch.setattr(training.train, "train", killed)
    work = tmp_path / "killed" / "work"
    shutil.copytree(smoke_run.work, work)
    data = json.loads((work / "smoke.json").read_text())
    smaller_font(data)
    (work / "smoke.json").write_text(json.dumps(data))
    assert _run_in(work)[0] == 130
    monkeypatch.setattr(training.train, "train", train)
    code, printed = _run_in(work)
    assert code == 0, printed
    assert "resuming from checkpoint" not in printed
    marker = "train__pixels-20px.json"
    fields = ("train_steps", "val_losses")
    assert {k: json.loads(_markers(work)[marker])[k] for k in fields} == \
        {k: json.loads(clean[marker])[k] for k in fields}
    metrics = json.loads((work / "experiment" / "arms" / "pixels-20px" / "metrics.json").read_text())
    clean_metrics = (tmp_path / "clean" / "work" / "experiment" / "arms" / "pixels-20px" / "metrics.json")
    assert metrics["systems"] == json.loads(clean_metrics.read_text())["systems"]
