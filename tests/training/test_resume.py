"""A run killed at any moment resumes from its last complete checkpoint and ends with the same weights as an
uninterrupted run (bitwise on CPU); partial checkpoints are never resumed from; a resumed run trains only the
steps after its checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers
from safetensors.torch import load_file

from tests.training.conftest import REPO, TINY_BART, base_args, model_args
from training.run_outputs import OutputDirError, checkpoint_step, resolve_checkpoint
from training.train import main

# Each optimizer step sleeps, so the test can kill the run between its first checkpoint and its end.
SLOW_RUN = """
import sys, time
import transformers
step = transformers.Trainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(0.4)
    return step(self, *args, **kwargs)
transformers.Trainer.training_step = slow_step
from training.train import main
sys.exit(main(sys.argv[1:]))
"""


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


@pytest.mark.slow  # training in fresh processes, killed and resumed
@pytest.mark.parametrize("kind", ["seq2seq", "deepseek"])
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, prepared, tiny_config, kind):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    steps = ["--max-steps", "8", *model_args(kind)]  # after TINY_STEPS and --model-name, so they win
    # Uninterrupted and resumed runs in this process (one thread, like the killed one): only the kill needs a
    # child process.
    assert main([*base_args(prepared, TINY_BART, tiny_config, straight), *steps]) == 0

    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [*base_args(prepared, TINY_BART, tiny_config, killed), *steps]
    process = subprocess.Popen([sys.executable, str(script), *argv], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while checkpoint_step(killed / "checkpoint-2") is None:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists()  # it really stopped before the end

    assert main([*argv, "--resume"]) == 0
    state = json.loads((killed / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)



def test_resume_trains_on_from_the_latest_complete_checkpoint(tmp_path, prepared, tiny_config,
                                                              monkeypatch):
    # Deterministic CPU runs end with the same weights whether they resume or start over, so equal weights (the
    # test above) cannot tell; the optimizer steps this process runs can. Checkpoint choice and resuming are the
    # CLI's and the Trainer's, the same for both tasks: the fast baseline is enough here.
    out = tmp_path / "run"
    argv = base_args(prepared, TINY_BART, tiny_config, out)
    assert main([*argv, "--max-steps", "4"]) == 0
    assert sorted(checkpoint_step(p) for p in out.glob("checkpoint-*")) == [2, 4]
    (out / "checkpoint-6").mkdir()  # as a run killed while saving step 6 leaves it: no trainer_state.json
    (out / "checkpoint-6" / "model.safetensors").write_bytes(b"")

    started = []  # the global step each optimizer step of the resumed run starts from
    training_step = transformers.Trainer.training_step

    def recorded_step(self, *args, **kwargs):
        started.append(self.state.global_step)
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", recorded_step)
    assert main([*argv, "--max-steps", "8", "--resume"]) == 0
    assert started == [4, 5, 6, 7]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 9))


def test_partial_checkpoints_are_skipped_and_removed(tmp_path):
    for step, state in ((2, {"global_step": 2}), (4, None), (6, "{\"global_ste")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    assert resolve_checkpoint(tmp_path, "latest") == str(tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    with pytest.raises(OutputDirError, match="not a complete checkpoint"):
        resolve_checkpoint(tmp_path, "checkpoint-4")
    assert resolve_checkpoint(tmp_path / "empty", "latest") is None


def _logged_learning_rates(folder: Path) -> dict[int, float]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return {h["step"]: h["learning_rate"] for h in state["log_history"] if "learning_rate" in h}


def test_resume_applies_a_changed_learning_rate(tmp_path, prepared, tiny_config, capsys):
    # The schedule of steps 5-6 depends only on the step and the run's settings, so a resumed run with a new
    # learning rate must log exactly what a fresh run with that rate logs there (transformers alone restores the
    # checkpoint's base rate and would log the old one).
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    assert main([*base_args(prepared, TINY_BART, tiny_config, resumed), "--max-steps", "4"]) == 0
    capsys.readouterr()
    argv = [*base_args(prepared, TINY_BART, tiny_config, resumed), "--learning-rate", "0.01", "--resume"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "optimizer.learning_rate 0.003 -> 0.01" in out and "resuming from checkpoint-4 (step 4 of 6)" in out
    assert main([*base_args(prepared, TINY_BART, tiny_config, fresh), "--learning-rate", "0.01"]) == 0
    assert [_logged_learning_rates(resumed)[step] for step in (5, 6)] == \
        [_logged_learning_rates(fresh)[step] for step in (5, 6)]
    assert _logged_learning_rates(resumed)[4] != _logged_learning_rates(fresh)[4]  # steps 1-4 ran at 0.003


@pytest.mark.parametrize("flags, named", [(["--max-length", "16"], "argument --max-length 16"),
                                          (["--seed", "8"], "argument --seed 8")])
def test_resume_refuses_a_setting_that_decides_the_weights(tmp_path, prepared, tiny_config, capsys, flags, named):
    out = tmp_path / "run"
    assert main([*base_args(prepared, TINY_BART, tiny_config, out), "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert main([*base_args(prepared, TINY_BART, tiny_config, out), *flags, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"with {named}: its checkpoints" in err[0] and "--overwrite" in err[0]


def test_resume_refuses_other_training_data(tmp_path, prepared, tiny_config, capsys):
    out, other = tmp_path / "run", tmp_path / "train.jsonl"
    assert main([*base_args(prepared, TINY_BART, tiny_config, out), "--max-steps", "2"]) == 0
    lines = (prepared / "train.jsonl").read_text().splitlines(keepends=True)
    other.write_text("".join(lines[:-1]))  # the same file name in another folder, one record fewer
    capsys.readouterr()
    assert main([*base_args(prepared, TINY_BART, tiny_config, out), "--train", str(other), "--resume"]) == 2
    assert "the train data differs" in capsys.readouterr().err


def test_a_run_resumed_at_its_end_counts_no_steps(tmp_path, prepared, tiny_config, capsys):
    out = tmp_path / "run"
    assert main([*base_args(prepared, TINY_BART, tiny_config, out)]) == 0
    capsys.readouterr()
    assert main([*base_args(prepared, TINY_BART, tiny_config, out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "trained 0 steps: resumed at step 6 of 6" in printed and "samples/s" not in printed


@pytest.mark.slow  # training in fresh processes
def test_a_resumed_run_reports_the_whole_runs_truncation_counts(tmp_path, prepared, tiny_config):
    from training.train import build_parser, resolve_config, train

    def run(out: Path, *extra: str):
        argv = [*base_args(prepared, TINY_BART, tiny_config, out), *model_args("deepseek"), "--max-steps", "4",
                "--input-mode", "text", "--max-source-length", "16", *extra]
        return train(resolve_config(build_parser().parse_args(argv)), resume="latest" if "--resume" in extra else None)

    straight = run(tmp_path / "straight")
    assert straight.truncated_targets > 0 and straight.truncated_sources > 0
    stopped = tmp_path / "stopped"
    run(stopped, "--max-steps", "2")
    resumed = run(stopped, "--resume")
    assert (resumed.truncated_targets, resumed.truncated_sources) == \
        (straight.truncated_targets, straight.truncated_sources)
