"""Stage bookkeeping: a finished stage is skipped, a changed setting redoes it and what follows, a killed one
continues, a bad input is one line and a bug keeps its traceback."""
import json

import pytest

from config import UserError
from experiments.stages import Stage, StageFailed, StageRunner, marker_path


def _stage(stage_id, consumes, runs, after=(), fail=None):
    def work(resume):
        runs.append((stage_id, resume))
        if fail is not None:
            raise fail
        return {"resumed": resume}

    return Stage(stage_id, "make", None, consumes, work, lambda resume: f"make {stage_id} resume={resume}",
                 after=list(after))


def test_finished_stages_are_skipped_and_changed_settings_redo_them_and_what_follows(tmp_path):
    runs = []

    def run_all(steps):
        runner = StageRunner(tmp_path / "exp")
        plan = [_stage("make/a", {"steps": steps}, runs), _stage("make/b", {"size": 1}, runs, after=["make/a"]),
                _stage("make/c", {"size": 1}, runs)]
        return [runner.run(stage) for stage in plan]

    markers = run_all(1)
    assert runs == [("make/a", False), ("make/b", False), ("make/c", False)]
    assert all(m["seconds"] >= 0 and m["resumed"] is False for m in markers)  # the work's figures are kept
    assert markers[0]["command"] == "make make/a resume=False"
    assert run_all(1) == markers and len(runs) == 3  # nothing redone, markers unchanged
    run_all(2)
    # The changed stage and the one reading its output; not the independent one.
    assert runs[3:] == [("make/a", False), ("make/b", False)]


def test_deciding_what_is_done_writes_nothing(tmp_path):
    runner = StageRunner(tmp_path / "exp")
    assert runner.done(_stage("make/a", {}, [])) is None and runner.fingerprints["make/a"]
    assert not (tmp_path / "exp").exists()


def test_an_interrupted_stage_continues_and_one_with_other_settings_starts_afresh(tmp_path, capsys):
    runs = []
    with pytest.raises(StageFailed, match=r"^stage make/x failed: no such file \(fix it"):
        StageRunner(tmp_path / "exp").run(_stage("make/x", {"n": 1}, runs, fail=UserError("no such file")))
    stage = _stage("make/x", {"n": 1}, runs)
    started = json.loads(marker_path(tmp_path / "exp", stage, ".started").read_text())
    runner = StageRunner(tmp_path / "exp")
    marker = runner.run(stage)
    assert started["fingerprint"] == runner.fingerprints["make/x"] == marker["fingerprint"]
    assert runs == [("make/x", False), ("make/x", True)] and marker["continued_after_interruption"]
    assert marker["command"] == "make make/x resume=True"
    assert "(continuing an interrupted run)" in capsys.readouterr().out
    assert not marker_path(tmp_path / "exp", stage, ".started").exists()

    with pytest.raises(StageFailed):  # started with n=2, then asked for n=3: not a continuation
        StageRunner(tmp_path / "exp").run(_stage("make/y", {"n": 2}, runs, fail=UserError("stop")))
    StageRunner(tmp_path / "exp").run(_stage("make/y", {"n": 3}, runs))
    assert runs[-1] == ("make/y", False)


def test_a_bug_in_a_stage_keeps_its_traceback(tmp_path):
    # A ValueError too: only a UserError (or an OSError) is the user's to fix.
    for bug in (KeyError("bug"), ValueError("bug")):
        with pytest.raises(type(bug)):
            StageRunner(tmp_path / "exp").run(_stage("make/z", {}, [], fail=bug))
