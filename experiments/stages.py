"""Stages of an experiment: typed stage functions, each run once, skipped when already done.

A stage is done when its marker file (`stages/<id>.json`, written atomically after the stage succeeded) holds the
stage's current fingerprint: a hash of what the stage consumes (the settings its function reads, not those it
ignores) and of the fingerprints of the stages whose outputs it reads. A changed setting therefore redoes the
stages that read it and everything after them, and nothing else. A stage that was started with the same
fingerprint but not finished (a kill) is continued (`work(resume=True)`); one started with other settings starts
afresh, with its outputs removed first.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from config import USER_ERRORS, UserError, first_line
from data.jsonl import read_json_object, write_json_atomic


class StageFailed(UserError, RuntimeError):
    """A stage stopped on an input problem the user can fix. One line for the user."""


@dataclass
class Stage:
    id: str  # "<kind>/<name>", e.g. "train/pixels-12px"
    kind: str  # prepare, references, train, generate, evaluate
    arm: Optional[str]  # None for stages shared by several arms
    consumes: dict[str, Any]  # what the stage reads (JSON values): its identity, with the stages in `after`
    work: Callable[[bool], dict[str, Any]]  # does the stage (True: continue an interrupted attempt); figures
    # The equivalent command line (or what the step does) of a fresh attempt, which replaces stale outputs, or of
    # a continuing one: what a user runs to take the stage over by hand.
    command: Callable[[bool], str]
    after: list[str] = field(default_factory=list)  # ids of the stages whose outputs it reads
    settings: Any = None  # the typed settings its function takes
    # What it writes: removed before a fresh attempt starts, so an attempt with other settings that was killed
    # before it replaced them can never be taken for this one's (e.g. resumed from another run's checkpoint).
    outputs: list[Path] = field(default_factory=list)


def marker_path(folder: Path, stage: Stage, suffix: str = "") -> Path:
    return folder / "stages" / f"{stage.id.replace('/', '__')}{suffix}.json"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class StageRunner:
    """Runs stages in order in this process, keeping their fingerprints, markers and timings."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fingerprints: dict[str, str] = {}

    def fingerprint(self, stage: Stage) -> str:
        digest = hashlib.sha256(json.dumps(stage.consumes, sort_keys=True).encode())
        for upstream in stage.after:
            digest.update(self.fingerprints[upstream].encode())
        return digest.hexdigest()[:16]

    def done(self, stage: Stage) -> Optional[dict[str, Any]]:
        """The marker of a finished stage with the current settings, else None (also fills the fingerprint).
        Reads only: an experiment that was never run stays unwritten."""
        self.fingerprints[stage.id] = self.fingerprint(stage)
        marker = read_json_object(marker_path(self.folder, stage))
        return marker if marker.get("fingerprint") == self.fingerprints[stage.id] else None

    def run(self, stage: Stage) -> dict[str, Any]:
        """Run `stage` unless done; returns its marker, with the figures its work returned."""
        marker = self.done(stage)
        if marker is not None:
            print(f"==> {stage.id}: done earlier ({marker['seconds']:.1f} s), skipped", flush=True)
            return marker
        fingerprint = self.fingerprints[stage.id]
        started = marker_path(self.folder, stage, ".started")
        resuming = read_json_object(started).get("fingerprint") == fingerprint
        if not resuming:  # before the marker: a kill in between leaves a fresh attempt to make again
            marker_path(self.folder, stage).unlink(missing_ok=True)  # it may vouch for the outputs about to go
            for path in stage.outputs:
                _remove(path)
        started.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(started, {"fingerprint": fingerprint})
        print(f"\n==> {stage.id}{' (continuing an interrupted run)' if resuming else ''}\n    "
              f"{stage.command(resuming)}", flush=True)
        began = time.perf_counter()
        try:
            figures = stage.work(resuming)
        except USER_ERRORS as err:  # bad input, reported in one line; anything else is a bug
            raise StageFailed(f"stage {stage.id} failed: {first_line(err)} (fix it and run the experiment again: "
                              "finished stages are kept)") from err
        marker = {"stage": stage.id, "kind": stage.kind, "arm": stage.arm, "command": stage.command(resuming),
                  "fingerprint": fingerprint, "seconds": round(time.perf_counter() - began, 3),
                  "continued_after_interruption": resuming,
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **figures}
        write_json_atomic(marker_path(self.folder, stage), marker)
        started.unlink(missing_ok=True)
        return marker
