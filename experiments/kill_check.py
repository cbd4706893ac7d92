"""Kill the experiment runner anywhere and check that rerunning it gives an uninterrupted run's results.

    python -m experiments.kill_check                      # the smoke config, 12 kills (minutes on a CPU)
    python -m experiments.kill_check --kills 20 --seed 3  # other moments

Three runs of a small version of the config (`--max-samples 8 --max-steps 4 --test-samples 4`, checkpoints and
validation every 2 steps so that a kill can land between checkpoints):
1. uninterrupted, the reference;
2. the same experiment in a new folder, SIGKILLed (the whole process group) at `--kills` moments, each a chosen
   delay after a stage's `==> <stage>` line, walking through the stages in order, and rerun after each kill until
   it finishes;
3. a render change (one pixels arm's font size) in copies of the finished reference, each killed at another
   moment of the first second of that arm's training stage and rerun; against the same change run uninterrupted.
Each rerun's results.json must equal its reference in every arm's scores, intervals, validation losses, steps,
document counts and truncation counts. Prints each kill (the stage it was aimed at, the delay, the stage it
actually hit) and the comparison; exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from config import UserError
from config.cli import Parser, run_command

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--max-samples", "8", "--max-steps", "4", "--test-samples", "4"]
# Seconds after a changed arm's training stage starts: before, while and after its training loads anything.
CHANGE_KILL_DELAYS = (0.0, 0.3, 0.8)
# What an interruption must not change (timings may).
COMPARED = ("scores", "intervals", "val_losses", "train_steps", "documents", "missing_predictions",
            "empty_predictions", "truncated_documents", "truncated_training_inputs", "compression_ratio", "reading")


@dataclass
class Kill:
    aimed_at: str  # the stage whose start line triggers the kill
    delay: float  # seconds after that line
    hit: Optional[str] = None  # the stage that was running when the signal went (None: the run ended first)


def small_config(config: Path, folder: Path) -> Path:
    """The config with checkpoints and validation every 2 steps in every trained arm."""
    data = json.loads(config.read_text(encoding="utf-8"))
    often = {"save_interval": 2, "eval_steps": 2, "log_interval": 1}
    data["training"].update(often)
    for arm in data["arms"]:
        if arm["type"] == "seq2seq" and arm.get("train", True) and not arm.get("model_of"):
            arm.setdefault("training", {}).update(often)
    path = folder / "experiment.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def run(folder: Path, config: Path, kill: Optional[Kill] = None, log: Optional[Path] = None,
        order: Optional[list[str]] = None) -> int:
    """`python -m experiments.run` in `folder` (its experiment in `folder/out`); with `kill`, SIGKILLed `kill.delay`
    seconds after the line that starts `kill.aimed_at`, or the first stage after it in `order` that runs (an
    earlier kill may have landed past it). Returns the exit status (-9 when killed)."""
    position = {stage: i for i, stage in enumerate(order or ([kill.aimed_at] if kill else []))}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "experiments.run", str(config), "--output-dir", "out", *SMALL]
    process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    current: list[str] = []
    timer: Optional[threading.Timer] = None

    def fire() -> None:
        kill.hit = current[-1] if current else None
        os.killpg(process.pid, signal.SIGKILL)

    with open(log or os.devnull, "a", encoding="utf-8") as sink:
        for line in process.stdout:
            sink.write(line)
            if line.startswith("==> ") and "done earlier" not in line:
                stage = line[4:].split()[0].rstrip(":")
                current.append(stage)
                if kill is not None and timer is None and position.get(stage, -1) >= position[kill.aimed_at]:
                    timer = threading.Timer(kill.delay, fire)
                    timer.start()
    status = process.wait()
    if timer is not None:
        timer.cancel()
    return status


def finish(folder: Path, config: Path, log: Path) -> None:
    status = run(folder, config, log=log)
    if status != 0:
        raise SystemExit(f"kill_check: the run in {folder} failed with status {status}; see {log}")


def results(folder: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((folder / "out" / "results.json").read_text(encoding="utf-8"))
    return {arm["name"]: {key: arm.get(key) for key in COMPARED} for arm in data["arms"]}


def differences(reference: dict, other: dict) -> list[str]:
    return [f"{arm}.{key}: {reference[arm][key]!r} != {other.get(arm, {}).get(key)!r}"
            for arm in reference for key in COMPARED if reference[arm][key] != other.get(arm, {}).get(key)]


def stage_ids(config: Path, folder: Path) -> list[str]:
    from experiments.config import read_experiment
    from experiments.plan import build_plan

    exp = read_experiment(config, {"output_dir": str(folder / "out"), "dataset.max_samples": 8,
                                   "dataset.test_samples": 4}, max_steps=4)
    return [stage.id for stage in build_plan(exp, folder / "out")]


def kill_points(stages: list[str], count: int, seed: int) -> list[Kill]:
    """`count` kills in the order of the stages: one in each kind of stage first (prepare, references, train,
    generate, evaluate), the rest anywhere, training stages (the long ones) twice as often. Delays run up to 2.5 s
    after a training stage starts and up to 1 s after the others."""
    rng = random.Random(seed)
    kinds: dict[str, list[int]] = {}
    for i, stage in enumerate(stages):
        kinds.setdefault(stage.split("/")[0], []).append(i)
    chosen = [rng.choice(indices) for indices in kinds.values()][:count]
    weighted = [i for i, stage in enumerate(stages) for _ in range(2 if stage.startswith("train/") else 1)]
    chosen += [rng.choice(weighted) for _ in range(count - len(chosen))]
    return [Kill(stages[i], round(rng.uniform(0.0, 2.5 if stages[i].startswith("train/") else 1.0), 2))
            for i in sorted(chosen)]


def killed_run(folder: Path, config: Path, kills: list[Kill], stages: list[str], log: Path) -> None:
    """The experiment killed at each of `kills` in turn (one rerun per kill), then run to its end."""
    for kill in kills:
        status = run(folder, config, kill, log, stages)
        print(f"  kill aimed at {kill.aimed_at} + {kill.delay:.2f} s: "
              + (f"killed during {kill.hit}" if status == -signal.SIGKILL else f"the run ended first ({status})"),
              flush=True)
    finish(folder, config, log)


def render_change(reference: Path, work: Path, config: Path, log: Path) -> list[str]:
    """A pixels arm's font size changed; killed in the first second of its training stage (at several moments,
    each in its own copy), rerun, compared with the same change run uninterrupted."""
    data = json.loads(config.read_text(encoding="utf-8"))
    arm = next(arm for arm in data["arms"] if arm["type"] == "pixels")
    arm.setdefault("render", {})["font_size"] = arm.get("render", {}).get("font_size", 12) + 2

    def copy(name: str) -> Path:
        shutil.copytree(reference, work / name)
        (work / name / "experiment.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        return work / name / "experiment.json"

    finish(work / "clean", copy("clean"), log)
    clean, problems = results(work / "clean"), []
    for delay in CHANGE_KILL_DELAYS:
        name = f"killed-{delay:.1f}s"
        changed, kill = copy(name), Kill(f"train/{arm['name']}", delay)
        status = run(work / name, changed, kill, log)
        print(f"  render change ({arm['name']} font {arm['render']['font_size']} px): kill aimed at "
              f"{kill.aimed_at} + {kill.delay:.2f} s: " + (f"killed during {kill.hit}" if status == -signal.SIGKILL
                                                           else f"the run ended first ({status})"), flush=True)
        finish(work / name, changed, log)
        problems += [f"render change, killed at {delay:.1f} s: {p}" for p in differences(clean, results(work / name))]
    return problems


def build_parser() -> Parser:
    parser = Parser(prog="python -m experiments.kill_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "experiments" / "smoke-cpu.json"),
                        help="experiment config (default: the CPU smoke config)")
    parser.add_argument("--kills", type=int, default=12, help="kills of the runner (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="chooses the kill moments")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed at the end)")
    return parser


def check(args: argparse.Namespace) -> int:
    """Runs killed and rerun against uninterrupted ones: 0 when every compared field is equal, else 1."""
    if args.kills < 1 or not Path(args.config).is_file():
        raise UserError("--kills must be at least 1 and --config an existing file")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kill-check-"))
    log = work / "runs.log"
    try:
        (work / "reference").mkdir(parents=True)
        (work / "killed").mkdir()
        config = small_config(Path(args.config), work / "reference")
        shutil.copy(config, work / "killed" / config.name)
        began = time.perf_counter()
        finish(work / "reference", config, log)
        print(f"reference run: {time.perf_counter() - began:.0f} s", flush=True)
        stages = stage_ids(config, work / "killed")
        kills = kill_points(stages, args.kills, args.seed)
        killed_run(work / "killed", work / "killed" / config.name, kills, stages, log)
        problems = differences(results(work / "reference"), results(work / "killed"))
        problems += render_change(work / "reference", work / "change", config, log)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    hit = sum(kill.hit is not None for kill in kills)
    print(f"{hit} of {len(kills)} kills landed in a stage; reruns after the kills " +
          ("equal the uninterrupted runs in every compared field" if not problems else "differ:"))
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(build_parser(), check, argv)


if __name__ == "__main__":
    sys.exit(main())
