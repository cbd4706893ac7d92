"""Stage bookkeeping: a finished stage is skipped, a changed setting redoes it and what follows, a killed one
continues with its command's resume flag."""
import json

import pytest

from experiments.stages import Stage, StageFailed, StageRunner, marker_path


def test_finished_stages_are_skipped_and_changed_settings_redo_them_and_what_follows(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text('{"steps": 1}')
    runs = []
    first = Stage("make/a", "model", None, action=lambda: runs.append("a"), reads=[settings], describe="make a")
    second = Stage("make/b", "model", None, action=lambda: runs.append("b"), after=["make/a"], describe="make b")

    def run_all():
        runner = StageRunner(tmp_path / "exp")
        return [runner.run(stage) for stage in (first, second)]

    markers = run_all()
    assert runs == ["a", "b"] and all(m["seconds"] >= 0 for m in markers)
    assert run_all() == markers and runs == ["a", "b"]  # nothing redone, markers unchanged
    settings.write_text('{"steps": 2}')
    run_all()
    assert runs == ["a", "b", "a", "b"]  # the changed stage and the one reading its output


def test_an_interrupted_command_continues_with_its_resume_flag(tmp_path, capsys):
    argv = ["no-such-references.jsonl", "--baseline", "lead-3", "--output", str(tmp_path / "m.json")]
    stage = Stage("evaluate/x", "evaluate", "x", "evaluation.evaluate", argv,
                  fresh=["--bootstrap", "0"], resume=["--bootstrap", "10"])
    runner = StageRunner(tmp_path / "exp")
    with pytest.raises(StageFailed, match="evaluate/x failed"):  # a failed command leaves the stage started
        runner.run(stage)
    assert "--bootstrap 0" in capsys.readouterr().out
    started = json.loads(marker_path(tmp_path / "exp", stage, ".started").read_text())
    assert started["fingerprint"] == runner.fingerprints[stage.id]
    with pytest.raises(StageFailed):
        StageRunner(tmp_path / "exp").run(stage)
    printed = capsys.readouterr().out
    assert "(continuing an interrupted run)" in printed and "--bootstrap 10" in printed
    assert not marker_path(tmp_path / "exp", stage).exists()
