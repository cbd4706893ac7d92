"""Run an experiment: prepare -> train -> generate -> evaluate for every arm of one config, then compare.

    python -m experiments.run configs/experiments/smoke-cpu.json
    python -m experiments.run configs/experiments/cnn-dailymail-lora.json --output-dir /data/exp1

Each stage calls the typed function of a project command (prepare, train, generate, evaluate) in this process;
stages already done with the same settings are skipped, so after a kill the same command continues where it
stopped. Each arm's folders are what the ordinary commands write, so any stage can be taken over by hand: the
equivalent command of each stage is printed and kept in results.md. Writes results.json, results.md and
rouge_vs_compression.png in the experiment folder. A bad config ends with one `error:` line before any work
starts; `--estimate-only` prints the plan's wall-time estimate from the config alone and writes nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from config import save_json
from config.cli import Parser, run_command


def build_parser() -> Parser:
    # Destinations are the config keys the flags override, so an error in one names the flag that gave it.
    parser = Parser(prog="python -m experiments.run", config_file="config",
                    description="Run every arm of an experiment config (pages at several compressions, the same "
                                "decoder on text tokens, seq2seq, Lead-N) and write one comparison.")
    parser.add_argument("config", help="experiment JSON (see configs/experiments/)")
    parser.add_argument("--output-dir", dest="output_dir", help="experiment folder (default: the config's "
                        "output_dir, else experiments_output/<name>)")
    sizes = parser.add_argument_group("smaller runs (override the config)")
    sizes.add_argument("--max-samples", dest="dataset.max_samples", type=int, metavar="N",
                       help="records prepared per split")
    sizes.add_argument("--test-samples", dest="dataset.test_samples", type=int, metavar="N",
                       help="test documents summarized by every arm")
    sizes.add_argument("--max-steps", dest="max_steps", type=int, metavar="N",
                       help="training steps of every trained arm")
    parser.add_argument("--estimate-only", action="store_true", help="check the config, print the plan and the "
                        "wall-time estimate, then stop; writes nothing and does not look the dataset up")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in ("output_dir", "dataset.max_samples", "dataset.test_samples")}


def run(args: argparse.Namespace) -> Optional[dict[str, Path]]:
    from experiments.config import load_experiment, read_experiment
    from experiments.estimate import estimate_table
    from experiments.plan import build_plan
    from experiments.stages import StageRunner

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # An estimate is made from the config alone: no dataset look-up (it may be offline or not cached yet).
    read = read_experiment if args.estimate_only else load_experiment
    exp = read(args.config, overrides(args), max_steps=args.max_steps)
    folder = exp.folder
    plan = build_plan(exp, folder)
    runner = StageRunner(folder)
    # Fingerprints chain through the plan; a stage's outputs can only be reused if all before it are.
    done = {}
    for stage in plan:
        marker = runner.done(stage)
        if marker is not None:
            done[stage.id] = marker
    print(f"Experiment {exp.name}: {len(exp.arms)} arms, {len(plan)} stages ({len(done)} done earlier) in {folder}")
    print(estimate_table(exp, done), flush=True)
    if args.estimate_only:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    save_json(exp, folder / "experiment.json")  # the resolved config this folder was made with
    markers = dict(done)
    for stage in plan:
        markers[stage.id] = runner.run(stage)
        if stage.kind == "train" and stage.id not in done:
            print(estimate_table(exp, markers), flush=True)
    return _report(exp, folder, markers, args.config)


def _report(exp, folder: Path, markers: dict, config_path: str) -> dict[str, Path]:
    from experiments.report import collect, markdown, write_results
    from model.checkpoint.presets import TINY_SEQ2SEQ
    from model.configuration import TINY_PRESET

    note = ""
    if exp.training.get("model_name") == TINY_PRESET:
        bart = " and a tiny random BART" if any(arm.model_name == TINY_SEQ2SEQ for arm in exp.arms) else ""
        note = ("**CPU smoke run**: DeepSeek-OCR's `tiny-random` preset (the real architecture at tiny widths, "
                f"random weights){bart}, trained for a few steps. It shows that every arm runs end to end, not what "
                "pixels cost against text: expect ROUGE far below the Lead baseline.")
    results = collect(exp, folder, markers, config_path)
    paths = write_results(results, folder, note)
    print("\n" + markdown(results, note).split("## Stages")[0].strip())
    print(f"\nwrote {paths['json']}, {paths['md']} and {paths['plot']}")
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    def command(args: argparse.Namespace) -> None:
        run(args)  # its result, the files written, is for callers of run(); the command has printed them

    return run_command(build_parser(), command, argv)


if __name__ == "__main__":
    sys.exit(main())
