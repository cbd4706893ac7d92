"""Stages of an experiment: ordinary project commands, each run once, skipped when already done.

A stage is done when its marker file (`stages/<id>.json`, written atomically after the command succeeded) holds
the stage's current fingerprint: a hash of its command, the content of the files the command reads its settings
from, and the fingerprints of the stages it depends on. A changed setting therefore redoes that stage and
everything after it, and nothing else. A stage that was started with the same fingerprint but not finished (a
kill) is continued with its command's own resume flag; one started with other settings starts afresh.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from data.jsonl import write_json_atomic


class StageFailed(RuntimeError):
    """A stage's command failed; its own output above says why. One line for the user."""


@dataclass
class Stage:
    id: str  # "<kind>/<name>", e.g. "train/pixels-12px"
    kind: str  # prepare, references, model, train, generate, evaluate
    arm: Optional[str]  # None for stages shared by several arms
    module: Optional[str] = None  # a project CLI (`python -m module argv`), or None for `action`
    argv: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # flags for a first attempt (replace stale outputs)
    resume: list[str] = field(default_factory=list)  # flags for continuing an interrupted attempt
    reads: list[Path] = field(default_factory=list)  # settings files whose content is part of the fingerprint
    after: list[str] = field(default_factory=list)  # ids of the stages whose outputs it reads
    action: Optional[Callable[[], None]] = None  # for steps that are not a project command
    describe: str = ""  # what `action` does, shown instead of a command

    def command(self, extra: Optional[list[str]] = None) -> str:
        if self.module is None:
            return self.describe
        return shlex.join(["python", "-m", self.module, *self.argv, *(extra or [])])


def marker_path(folder: Path, stage: Stage, suffix: str = "") -> Path:
    return folder / "stages" / f"{stage.id.replace('/', '__')}{suffix}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class StageRunner:
    """Runs stages in order in this process, keeping their fingerprints, markers and timings."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fingerprints: dict[str, str] = {}
        (folder / "stages").mkdir(parents=True, exist_ok=True)

    def fingerprint(self, stage: Stage) -> str:
        digest = hashlib.sha256(stage.command().encode())
        for path in stage.reads:
            digest.update(path.read_bytes())
        for upstream in stage.after:
            digest.update(self.fingerprints[upstream].encode())
        return digest.hexdigest()[:16]

    def done(self, stage: Stage) -> Optional[dict[str, Any]]:
        """The marker of a finished stage with the current settings, else None (also fills the fingerprint)."""
        self.fingerprints[stage.id] = self.fingerprint(stage)
        marker = _read(marker_path(self.folder, stage))
        return marker if marker.get("fingerprint") == self.fingerprints[stage.id] else None

    def run(self, stage: Stage, measure: Optional[Callable[[], dict[str, Any]]] = None) -> dict[str, Any]:
        """Run `stage` unless done; returns its marker. `measure` adds figures read from its outputs."""
        marker = self.done(stage)
        if marker is not None:
            print(f"==> {stage.id}: done earlier ({marker['seconds']:.1f} s), skipped", flush=True)
            return marker
        fingerprint = self.fingerprints[stage.id]
        started = marker_path(self.folder, stage, ".started")
        resuming = _read(started).get("fingerprint") == fingerprint
        extra = stage.resume if resuming else stage.fresh
        write_json_atomic(started, {"fingerprint": fingerprint})
        print(f"\n==> {stage.id}{' (continuing an interrupted run)' if resuming else ''}\n    "
              f"{stage.command(extra)}", flush=True)
        began = time.perf_counter()
        if stage.module is None:
            stage.action()
        else:
            code = run_module(stage.module, [*stage.argv, *extra])
            if code == 130:  # the command caught Ctrl-C itself; the whole run stops, resumable
                raise KeyboardInterrupt
            if code != 0:
                raise StageFailed(f"stage {stage.id} failed (exit status {code}, see its message above); "
                                  "fix it and run the experiment again: finished stages are kept")
        marker = {"stage": stage.id, "kind": stage.kind, "arm": stage.arm, "command": stage.command(),
                  "fingerprint": fingerprint, "seconds": round(time.perf_counter() - began, 3),
                  "continued_after_interruption": resuming,
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if measure is not None:
            marker.update(measure())
        write_json_atomic(marker_path(self.folder, stage), marker)
        started.unlink(missing_ok=True)
        return marker


def run_module(module: str, argv: list[str]) -> int:
    """`python -m module argv` in this process (no interpreter and torch start-up per stage): its exit status."""
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code if isinstance(code, int) else (0 if code is None else 1)
