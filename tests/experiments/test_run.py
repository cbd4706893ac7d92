"""The smoke experiment end to end, offline: every arm scored, the text arm on text, a kill and a resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.run import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "experiments" / "smoke-cpu.json"


def small_smoke(tmp_path: Path) -> Path:
    """The shipped smoke config with the in-training evaluation and decoding cut to a token or two (CI time)."""
    data = json.loads(SMOKE.read_text())
    quick = {"max_eval_samples": 1, "batch_size": 2, "log_interval": 1}
    data["training"].update(quick)
    for arm in data["arms"]:
        if arm["type"] == "seq2seq":
            arm["training"].update(quick)
    data["generation"].update(max_new_tokens=4, batch_size=2)
    data["bootstrap"] = 100
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps(data))
    return path


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_smoke_experiment_scores_every_arm_and_resumes_after_a_kill(tmp_path, capsys):
    config, out = small_smoke(tmp_path), tmp_path / "experiment"
    args = [str(config), "--output-dir", str(out), "--max-samples", "4", "--test-samples", "2", "--max-steps", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(out / "stages" / "train__pixels-12px.json", proc, timeout=400)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stages = out / "stages"
    finished = {p.name: p.read_text() for p in stages.glob("*.json") if not p.name.endswith(".started.json")}
    interrupted = [json.loads(p.read_text()) for p in stages.glob("*.started.json")]
    assert {"prepare__text.json", "train__pixels-12px.json"} <= set(finished)

    assert main(args) == 0
    printed = capsys.readouterr().out
    for name, text in finished.items():  # finished stages are neither redone nor rewritten
        assert (stages / name).read_text() == text
        assert f"==> {json.loads(text)['stage']}: done earlier" in printed
    assert len(interrupted) <= 1 and printed.count("(continuing an interrupted run)") == len(interrupted)

    results = json.loads((out / "results.json").read_text())
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert list(arms) == [arm["name"] for arm in json.loads(config.read_text())["arms"]]
    for arm in arms.values():
        assert arm["documents"] == 2 and arm["missing_predictions"] == 0
        assert all(math.isfinite(arm["scores"][m]) for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")), arm
        assert all(lo <= arm["scores"][m] <= hi for m, (lo, hi) in arm["intervals"].items()), arm
        if arm["type"] != "lead-3":
            assert arm["train_seconds"] > 0 and arm["train_steps"] == 2 and arm["generation_seconds"] > 0
    # The sweep: a larger font needs more pages, so fewer text tokens per vision token; text is read at 1x.
    assert arms["pixels-12px"]["compression_ratio"] > arms["pixels-20px"]["compression_ratio"] > 1
    assert arms["text"]["compression_ratio"] == 1.0 and arms["text"]["vision_tokens"] is None
    assert arms["pixels-12px"]["vision_tokens"] >= 64 and arms["lead-3"]["scores"]["rouge1"] > 0

    # The text arm really read text: its model says so, and generation saw no pages.
    text_arm = out / "arms" / "text"
    assert json.loads((text_arm / "model" / "processor_config.json").read_text())["input_mode"] == "text"
    predictions = [json.loads(line) for line in (text_arm / "predictions.jsonl").read_text().splitlines()]
    assert [(p["pages"], p["vision_tokens"]) for p in predictions] == [(0, None), (0, None)]
    state = json.loads((text_arm / "model" / "trainer_state.json").read_text())
    assert [h["loss"] for h in state["log_history"] if "loss" in h]  # it trained

    table = (out / "results.md").read_text()
    assert "CPU smoke run" in table and all(f"| {name} |" in table for name in arms)
    assert (out / "rouge_vs_compression.png").read_bytes()[:4] == b"\x89PNG"
