"""Training faults: a non-finite loss or gradient stops the run with one line naming the step and the last good
checkpoint (or, with on_nonfinite skip, its update is dropped and counted); a save killed half-way leaves the
previous checkpoint as the one `--resume` takes; a full disk while saving is one line and keeps the previous
checkpoint.

The faults are real events at a chosen moment: a NaN or inf put into one step's loss or gradients by a wrapped
`compute_loss`, a SIGKILL or a failing write from inside torch.save while a checkpoint is being written.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Optional

import pytest
import torch
import transformers
from safetensors.torch import load_file

from config import TrainingConfig
from tests.training.conftest import REPO, TINY_BART, base_args, model_args
from training.deepseek_trainer import DeepSeekOCRTrainer
from training.faults import TrainingStopped
from training.run_outputs import checkpoint_step, resolve_checkpoint
from training.train import build_parser, main, resolve_config, train
from training.trainer import SummarizationTrainer

# In a child process: torch.save kills the process (SIGKILL) when it first writes into checkpoint-4, after
# that folder's weights are written and before its trainer_state.json.
KILLED_WHILE_SAVING = """
import os, signal, sys
import torch
save = torch.save
def save_or_die(obj, f, *args, **kwargs):
    if "checkpoint-4" in str(f):
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *args, **kwargs)
torch.save = save_or_die
from training.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def poison(monkeypatch):
    """poison(step, what): optimizer step `step` (1-based; None: every step) gets a NaN loss ("loss"), or a finite
    loss whose gradients are infinite ("gradient"), in both trainers."""

    def arm(step: Optional[int], what: str = "loss") -> None:
        for cls in (SummarizationTrainer, DeepSeekOCRTrainer):
            original = cls.compute_loss

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, _original=original):
                result = _original(self, model, inputs, return_outputs, num_items_in_batch)
                if not model.training or return_outputs or step not in (None, self.state.global_step + 1):
                    return result
                if what == "loss":
                    return result * float("nan")
                result.register_hook(lambda grad: grad * float("inf"))
                return result

            monkeypatch.setattr(cls, "compute_loss", compute_loss)

    return arm


def _argv(prepared: Path, config: Path, out: Path, kind: str, *extra: str) -> list[str]:
    return [*base_args(prepared, TINY_BART, config, out), *model_args(kind), *extra]


def _config(argv: list[str]) -> TrainingConfig:
    return resolve_config(build_parser().parse_args(argv))


def _record_steps(monkeypatch) -> list[int]:
    """The global step each optimizer step of this process starts from."""
    started = []
    training_step = transformers.Trainer.training_step

    def recorded(self, *args, **kwargs):
        started.append(self.state.global_step)
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", recorded)
    return started


def _finite(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values())


@pytest.mark.parametrize("kind", ["seq2seq", pytest.param("deepseek", marks=pytest.mark.slow)])  # one trainer fast
def test_a_nan_loss_stops_the_run_with_one_line_and_the_last_checkpoint_resumes(
        tmp_path, prepared, tiny_config, capsys, monkeypatch, poison, kind):
    out = tmp_path / "run"
    poison(3)
    assert main(_argv(prepared, tiny_config, out, kind)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == \
        f"error: training stopped: non-finite loss at step 3; last good checkpoint: {out / 'checkpoint-2'}"
    # Nothing was written after the NaN: no later checkpoint, no final model.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists()
    assert _finite(out / "checkpoint-2")

    monkeypatch.undo()  # the poison goes; the same command with --resume continues from checkpoint-2
    started = _record_steps(monkeypatch)
    assert main([*_argv(prepared, tiny_config, out, kind), "--resume"]) == 0
    assert started == [2, 3, 4, 5]
    assert _finite(out)


def test_a_nonfinite_gradient_with_a_finite_loss_stops_the_run(tmp_path, prepared, tiny_config, poison):
    poison(1, "gradient")
    cfg = _config(_argv(prepared, tiny_config, tmp_path / "run", "seq2seq"))
    with pytest.raises(TrainingStopped, match=r"^training stopped: non-finite gradient norm at step 1; "
                                              r"no checkpoint written yet$"):
        train(cfg)


def test_skip_drops_the_update_of_a_nonfinite_step_and_reports_the_count(tmp_path, prepared, tiny_config, capsys,
                                                                       poison):
    out = tmp_path / "run"
    poison(3)
    cfg = _config(_argv(prepared, tiny_config, out, "seq2seq", "--max-steps", "5", "--save-interval", "1",
                        "--save-total-limit", "10", "--on-nonfinite", "skip"))
    result = train(cfg)
    assert result.steps == 5 and result.skipped_steps == [3]
    assert "skipped 1 step(s) with a non-finite loss or gradient norm, their updates not applied: steps 3" \
        in capsys.readouterr().out
    # Step 3 changed nothing (weights and AdamW state); the steps around it did.
    weights = {step: load_file(out / f"checkpoint-{step}" / "model.safetensors") for step in (2, 3, 4)}
    assert all(weights[2][k].equal(weights[3][k]) for k in weights[2])
    assert not all(weights[3][k].equal(weights[4][k]) for k in weights[3])
    moments = [torch.load(out / f"checkpoint-{step}" / "optimizer.pt")["state"] for step in (2, 3)]
    assert all(moments[0][i]["exp_avg"].equal(moments[1][i]["exp_avg"]) for i in moments[0])
    assert _finite(out)


def test_a_run_in_which_no_step_counted_fails_with_one_line(tmp_path, prepared, tiny_config, capsys, poison):
    out = tmp_path / "run"
    poison(None)
    assert main(_argv(prepared, tiny_config, out, "seq2seq", "--max-steps", "3", "--on-nonfinite", "skip")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: training stopped: all 3 steps of this run had a non-finite loss or gradient norm and "
                       f"were skipped, so nothing was trained and no model was saved in {out}")
    assert not (out / "model.safetensors").exists()


Rerun = namedtuple("Rerun", "name first resume")


@pytest.mark.slow  # training in fresh processes, killed
@pytest.mark.parametrize("case", [
    Rerun("first save of checkpoint-4", first=None, resume=[]),
    # checkpoint-4 exists, complete, from an earlier run: the resumed run writes it again and is killed doing so.
    Rerun("rewrite of checkpoint-4", first=["--max-steps", "4"], resume=["--resume", "checkpoint-2"]),
], ids=lambda case: case.name)
def test_a_save_killed_half_way_leaves_the_previous_checkpoint_for_resume(tmp_path, prepared, tiny_config,
                                                                          monkeypatch, case):
    out = tmp_path / "run"
    argv = base_args(prepared, TINY_BART, tiny_config, out)
    if case.first:
        assert main([*argv, *case.first]) == 0
        assert checkpoint_step(out / "checkpoint-4") == 4
    script = tmp_path / "killed_while_saving.py"
    script.write_text(KILLED_WHILE_SAVING)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(script), *argv, *case.resume], cwd=REPO, env=env,
                            capture_output=True, timeout=240)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (out / "checkpoint-4" / "model.safetensors").exists()  # killed half-way through that save

    assert resolve_checkpoint(out, "latest") == str(out / "checkpoint-2")
    started = _record_steps(monkeypatch)
    assert main([*argv, "--resume"]) == 0
    assert started == [2, 3, 4, 5]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def _full_disk_at_checkpoint_4(monkeypatch, failure: str) -> None:
    """torch.save into checkpoint-4 writes half its bytes, then fails as a full disk makes it fail."""
    save = torch.save

    def half_then_full(obj, f, *args, **kwargs):
        if "checkpoint-4" not in str(f):
            return save(obj, f, *args, **kwargs)
        save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])
        if failure == "errno":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch's own

    monkeypatch.setattr(torch, "save", half_then_full)
    if failure == "torch":  # its message names no cause; the disk it wrote to has no space left
        disk_usage = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=4096))


@pytest.mark.parametrize("failure", ["errno", "torch"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
        tmp_path, prepared, tiny_config, capsys, monkeypatch, failure):
    out = tmp_path / "run"
    argv = base_args(prepared, TINY_BART, tiny_config, out)
    _full_disk_at_checkpoint_4(monkeypatch, failure)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: training stopped: disk full while saving {out / 'checkpoint-4'} "
                                            f"at step 4; last good checkpoint: {out / 'checkpoint-2'}")
    assert not (out / "checkpoint-4").exists()  # the partial save is removed, its space freed
    assert checkpoint_step(out / "checkpoint-2") == 2 and _finite(out / "checkpoint-2")

    monkeypatch.undo()
    started = _record_steps(monkeypatch)
    assert main([*argv, "--resume"]) == 0
    assert started == [2, 3, 4, 5]
