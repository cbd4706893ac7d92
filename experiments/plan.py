"""An experiment as a list of stages: the project commands each arm needs, with their folders.

Layout under the experiment folder (every folder is what the command writes when run by hand):

    data/text/                      prepared records (no images): references, text and seq2seq arms, Lead-3
    data/pages-<mode>-<font>px/     prepared records with page images, one per render setting of pixels arms
    data/references.jsonl           the first `test_samples` test records: what every arm is scored against
    arms/<arm>/train_config.json    the arm's training settings (python -m training.train --config)
    arms/<arm>/model/               the trained model folder
    arms/<arm>/predictions.jsonl    generated summaries;  arms/<arm>/metrics.json: ROUGE, compression
    stages/                         one marker per finished stage (fingerprint, seconds, command)
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from config import GenerationSettings, RenderConfig
from data.jsonl import iter_jsonl, write_json_atomic, write_jsonl_atomic
from experiments.config import TINY_SEQ2SEQ, ArmSpec, ExperimentConfig, arm_generation, arm_render, arm_training
from experiments.stages import Stage

TEXT_DATA = "text"


def pages_data_name(render: RenderConfig) -> str:
    overflow = "" if render.overflow == "paginate" else f"-{render.overflow}"
    return f"pages-{render.mode}-{render.font_size}px{overflow}"


def _prepare(exp: ExperimentConfig, folder: Path, name: str, render: RenderConfig | None) -> Stage:
    spec = exp.dataset
    argv = [spec.source, "--output-dir", str(folder / "data" / name), "--seed", str(spec.seed)]
    for flag, value in (("--subset", spec.subset), ("--text-field", spec.text_field),
                        ("--summary-field", spec.summary_field), ("--max-samples", spec.max_samples)):
        if value is not None:
            argv += [flag, str(value)]
    if render is not None:
        argv += ["--generate-images", "--mode", render.mode, "--font-size", str(render.font_size),
                 "--overflow", render.overflow]
    return Stage(f"prepare/{name}", "prepare", None, "data.prepare_datasets", argv)


def _references(exp: ExperimentConfig, folder: Path) -> Stage:
    source = folder / "data" / TEXT_DATA / "test.jsonl"
    target = folder / "data" / "references.jsonl"

    def write() -> None:
        write_jsonl_atomic(target, itertools.islice(iter_jsonl(source), exp.dataset.test_samples))

    return Stage("references/test", "references", None, action=write, after=[f"prepare/{TEXT_DATA}"],
                 describe=f"first {exp.dataset.test_samples} records of {source} -> {target}")


def _generation_flags(settings: GenerationSettings) -> list[str]:
    return ["--batch-size", str(settings.batch_size), "--max-new-tokens", str(settings.max_new_tokens),
            "--num-beams", str(settings.num_beams), "--length-penalty", str(settings.length_penalty),
            "--no-repeat-ngram-size", str(settings.no_repeat_ngram_size), "--temperature", str(settings.temperature)]


def _base_model(exp: ExperimentConfig, folder: Path, arm: ArmSpec) -> tuple[str, list[Stage]]:
    """A seq2seq arm's starting model as a local folder or hub id, and the stage that makes it if any."""
    if arm.model_name == TINY_SEQ2SEQ:
        target = folder / "models" / TINY_SEQ2SEQ
        train_file = folder / "data" / TEXT_DATA / "train.jsonl"

        def build() -> None:
            from training.tiny_seq2seq import build_tiny_bart

            build_tiny_bart(target, (r["text"] + " " + r["summary"] for r in iter_jsonl(train_file)))

        return str(target), [Stage(f"model/{TINY_SEQ2SEQ}", "model", None, action=build,
                                   after=[f"prepare/{TEXT_DATA}"],
                                   describe=f"random 2-layer BART, BPE trained on {train_file} -> {target}")]
    # A trained arm's base, a folder, or a hub id scored zero-shot: training.train and the generator load them all
    # through the one model-source resolver (model/source.py).
    return arm.model_name, []


def _arm_stages(exp: ExperimentConfig, folder: Path, arm: ArmSpec) -> list[Stage]:
    out = folder / "arms" / arm.name
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.jsonl"

    def evaluate(scored: list[str], after: list[str]) -> Stage:
        return Stage(f"evaluate/{arm.name}", "evaluate", arm.name, "evaluation.evaluate",
                     [str(folder / "data" / "references.jsonl"), *scored, "--output", str(out / "metrics.json"),
                      "--per-example", str(out / "per_example.jsonl"), "--bootstrap", str(exp.bootstrap)],
                     after=["references/test", *after])

    if arm.type == "lead-3":
        return [evaluate(["--baseline", "lead-3"], [])]
    stages: list[Stage] = []
    data = pages_data_name(arm_render(exp, arm)) if arm.type == "pixels" else TEXT_DATA
    model, upstream = str(out / "model"), [f"prepare/{data}"]
    if arm.type == "seq2seq":
        base, made = _base_model(exp, folder, arm)
        stages += made
        upstream += [s.id for s in made]
        if not arm.train:
            model = base
    if arm.train:
        settings = arm_training(exp, arm)
        if arm.type == "seq2seq":
            settings["model_name"] = base
        config_file = out / "train_config.json"
        _write_if_changed(config_file, settings)
        argv = ["--config", str(config_file), "--train", str(folder / "data" / data / "train.jsonl"),
                "--val", str(folder / "data" / data / "val.jsonl"), "--output", model]
        if arm.type != "seq2seq":
            argv.insert(2, "--use-deepseek-ocr")
        stages.append(Stage(f"train/{arm.name}", "train", arm.name, "training.train", argv, fresh=["--overwrite"],
                            resume=["--resume"], reads=[config_file], after=upstream))
        upstream = [f"train/{arm.name}"]
    stages.append(Stage(f"generate/{arm.name}", "generate", arm.name, "evaluation.generate",
                        [str(folder / "data" / data / "test.jsonl"), "--model", model, "--output", str(predictions),
                         "--max-samples", str(exp.dataset.test_samples), *_generation_flags(arm_generation(exp, arm))],
                        fresh=["--overwrite"], after=upstream))
    return [*stages, evaluate([str(predictions)], [f"generate/{arm.name}"])]


def _write_if_changed(path: Path, data: dict[str, Any]) -> None:
    """Rewriting equal content would be harmless, but an unchanged file keeps its time stamp for the user."""
    if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)


def build_plan(exp: ExperimentConfig, folder: Path) -> list[Stage]:
    """Every stage of the experiment in an order that respects what each one reads."""
    stages = [_prepare(exp, folder, TEXT_DATA, None), _references(exp, folder)]
    renders = {}
    for arm in exp.arms:
        if arm.type == "pixels":
            render = arm_render(exp, arm)
            renders.setdefault(pages_data_name(render), render)
    stages += [_prepare(exp, folder, name, render) for name, render in renders.items()]
    seen = {s.id for s in stages}
    for arm in exp.arms:
        for stage in _arm_stages(exp, folder, arm):
            if stage.id not in seen:  # a model shared by two seq2seq arms is made once
                stages.append(stage)
                seen.add(stage.id)
    return stages
