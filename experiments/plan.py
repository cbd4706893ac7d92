"""An experiment as a list of stages: the typed stage functions each arm needs, with their settings and folders.

Layout under the experiment folder (every folder is what the stage's command writes when run by hand):

    data/text/                      prepared records (no images): references, text and seq2seq arms, Lead-N
    data/pages-<mode>-<font>px/     prepared records with page images, one per render setting of pixels arms
    data/references.jsonl           the first `test_samples` test records: what every arm is scored against
    arms/<arm>/train_config.json    the arm's training settings (python -m training.train --config)
    arms/<arm>/model/               the trained model folder
    arms/<arm>/predictions.jsonl    generated summaries (Lead-N: its sentences);  arms/<arm>/metrics.json: ROUGE...
    stages/                         one marker per finished stage (fingerprint, seconds, command, figures)

A stage's identity is what it consumes: training reads no generation settings (DeepSeek-OCR evaluates loss only
during training; for a seq2seq arm they decide only its in-training ROUGE report, never the weights), so a
changed decoding setting redoes generate and evaluate of each arm and no training. An arm with `model_of`
generates with the model another arm's train stage made, so it has no train stage and follows that one.
Planning writes nothing.
"""
from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import Any, Optional

from config import DEFAULT_BACKBONE, RenderConfig, TrainingConfig, apply_overrides, from_dict, save_json, to_dict
from config.cli import to_argv
from config.jobs import EvaluateJob, GenerateJob, PrepareJob
from data.jsonl import iter_jsonl, write_jsonl_atomic
from experiments.config import (
    LEAD_SENTENCES,
    LEAD_TYPES,
    ArmSpec,
    ExperimentConfig,
    arm_generation,
    arm_render,
    arm_training,
    lead_sentences,
    trains,
)
from experiments.stages import Stage
from inference.generate import settings_path

TEXT_DATA = "text"


def pages_data_name(render: RenderConfig) -> str:
    overflow = "" if render.overflow == "paginate" else f"-{render.overflow}"
    return f"pages-{render.mode}-{render.font_size}px{overflow}"


def _consumed(settings: Any, *unread: str) -> dict[str, Any]:
    """`settings` as a dict without the top-level keys the stage's outputs do not depend on."""
    return {key: value for key, value in to_dict(settings).items() if key not in unread}


def _command(module: str, settings: Any, *extra: str) -> str:
    return shlex.join(["python", "-m", module, *to_argv(settings), *extra])


def _prepare(exp: ExperimentConfig, folder: Path, name: str, render: RenderConfig | None) -> Stage:
    spec = exp.dataset
    job = PrepareJob(source=spec.source, subset=spec.subset, output_dir=str(folder / "data" / name),
                     text_field=spec.text_field, summary_field=spec.summary_field, max_samples=spec.max_samples,
                     seed=spec.seed, generate_images=render is not None, render=render or RenderConfig())

    def work(resume: bool) -> dict[str, Any]:
        from data.prepare_datasets import prepare

        prepare(job)
        return {}

    # The number of rendering processes changes no output; render settings matter only with images. The default
    # backbone's counts are what a stage prepared before `backbone` existed holds, so it adds nothing to the stage's
    # identity (an experiment prepared then resumes without preparing, training and generating again).
    unread = ("workers",) if render is not None else ("workers", "render")
    unread += ("backbone",) if job.backbone == DEFAULT_BACKBONE else ()
    return Stage(f"prepare/{name}", "prepare", None, _consumed(job, *unread), work,
                 lambda resume: _command("data.prepare_datasets", job), settings=job,
                 outputs=[Path(job.output_dir)])


def _references(exp: ExperimentConfig, folder: Path) -> Stage:
    source = folder / "data" / TEXT_DATA / "test.jsonl"
    target = folder / "data" / "references.jsonl"

    def work(resume: bool) -> dict[str, Any]:
        write_jsonl_atomic(target, itertools.islice(iter_jsonl(source), exp.dataset.test_samples))
        return {}

    return Stage("references/test", "references", None, {"test_samples": exp.dataset.test_samples}, work,
                 lambda resume: f"first {exp.dataset.test_samples} records of {source} -> {target}",
                 after=[f"prepare/{TEXT_DATA}"], outputs=[target])


def _train(exp: ExperimentConfig, arm: ArmSpec, data: Path, out: Path, after: list[str]) -> Stage:
    keys = {**arm_training(exp, arm), "train_file": str(data / "train.jsonl"), "val_file": str(data / "val.jsonl"),
            "output_dir": str(out / "model"), "task": "seq2seq" if arm.type == "seq2seq" else "deepseek-ocr"}
    config = from_dict(TrainingConfig, keys)
    config_file = out / "train_config.json"

    def work(resume: bool) -> dict[str, Any]:
        from training.train import train

        # Written when the stage runs, so the file always holds the settings of the model beside it.
        config_file.parent.mkdir(parents=True, exist_ok=True)
        save_json(config, config_file)
        result = train(config, resume="latest" if resume else None, overwrite=not resume)
        return {"train_steps": result.steps, "step_seconds": result.step_seconds,
                "truncated_sources": result.truncated_sources, "truncated_targets": result.truncated_targets,
                "val_losses": [[step, loss] for step, loss in result.val_losses]}

    return Stage(f"train/{arm.name}", "train", arm.name, _consumed(config, "generation"), work,
                 lambda resume: shlex.join(["python", "-m", "training.train", "--config", str(config_file),
                                            "--resume" if resume else "--overwrite"]),
                 after=after, settings=config, outputs=[Path(config.output_dir), config_file])


def _generate(exp: ExperimentConfig, arm: ArmSpec, data: Path, model: str, out: Path, after: list[str]) -> Stage:
    job = GenerateJob(data_file=str(data / "test.jsonl"), model=model, output=str(out / "predictions.jsonl"),
                      max_samples=exp.dataset.test_samples, generation=arm_generation(exp, arm))

    def attempt(resume: bool) -> GenerateJob:  # a fresh attempt replaces what an attempt with other settings left
        return apply_overrides(job, {"overwrite": not resume})

    def work(resume: bool) -> dict[str, Any]:
        from inference.generate import generate

        # The arm's folder decodes as its predictions were made, also when run by hand; a folder that another
        # arm trained keeps that arm's settings.
        if trains(arm):
            from training.trainer import update_generation_settings

            update_generation_settings(model, job.generation)
        result = generate(attempt(resume))
        return {"documents": result.generated + result.done_earlier, "generated": result.generated,
                "skipped": result.skipped}

    output = Path(job.output)
    return Stage(f"generate/{arm.name}", "generate", arm.name, _consumed(job, "overwrite"), work,
                 lambda resume: _command("evaluation.generate", attempt(resume)), after=after, settings=job,
                 outputs=[output, settings_path(output)])


def _lead(arm: ArmSpec, folder: Path, out: Path) -> Stage:
    """Lead-N as a predictions file: the first N sentences of each reference record's text (evaluation's Lead-N,
    for the N that its own --baseline does not offer)."""
    source, target, sentences = folder / "data" / "references.jsonl", out / "predictions.jsonl", lead_sentences(arm)

    def work(resume: bool) -> dict[str, Any]:
        from evaluation.metrics import lead_n

        write_jsonl_atomic(target, ({"id": record["id"], "prediction": lead_n(record["text"], sentences)}
                                    for record in iter_jsonl(source)))
        return {}

    return Stage(f"lead/{arm.name}", "lead", arm.name, {"sentences": sentences}, work,
                 lambda resume: f"first {sentences} sentences (evaluation.metrics.lead_n) of each text of {source} "
                                f"-> {target}", after=["references/test"], outputs=[target])


def evaluation_baseline(arm: ArmSpec) -> Optional[str]:
    """The evaluate command's own baseline that scores the arm: Lead-3 is one; Lead-N for another N is not."""
    return "lead-3" if arm.type in LEAD_TYPES and lead_sentences(arm) == LEAD_SENTENCES else None


def _evaluate(exp: ExperimentConfig, arm: ArmSpec, folder: Path, out: Path, after: list[str]) -> Stage:
    baseline = evaluation_baseline(arm)
    job = EvaluateJob(references=str(folder / "data" / "references.jsonl"),
                      predictions=None if baseline else str(out / "predictions.jsonl"),
                      output=str(out / "metrics.json"), baseline=baseline, per_example=str(out / "per_example.jsonl"),
                      bootstrap=exp.bootstrap)

    def work(resume: bool) -> dict[str, Any]:
        from evaluation.evaluate import evaluate

        out.mkdir(parents=True, exist_ok=True)  # Lead-3's arm folder: no earlier stage made it
        evaluate(job)
        return {}

    return Stage(f"evaluate/{arm.name}", "evaluate", arm.name, _consumed(job, "workers"), work,
                 lambda resume: _command("evaluation.evaluate", job), after=["references/test", *after],
                 settings=job, outputs=[Path(job.output), Path(job.per_example)])


def _arm_stages(exp: ExperimentConfig, folder: Path, arm: ArmSpec) -> list[Stage]:
    out = folder / "arms" / arm.name
    if arm.type in LEAD_TYPES:
        if evaluation_baseline(arm):
            return [_evaluate(exp, arm, folder, out, [])]
        stage = _lead(arm, folder, out)
        return [stage, _evaluate(exp, arm, folder, out, [stage.id])]
    name = pages_data_name(arm_render(exp, arm)) if arm.type == "pixels" else TEXT_DATA
    data, upstream, stages = folder / "data" / name, [f"prepare/{name}"], []
    model = arm.model_name  # a seq2seq model scored zero-shot
    if trains(arm):
        stages.append(_train(exp, arm, data, out, upstream))
        upstream, model = [stages[-1].id], str(out / "model")
    elif arm.model_of:  # the model folder of the arm named, once its train stage has made it
        upstream, model = [f"train/{arm.model_of}"], str(folder / "arms" / arm.model_of / "model")
    stages.append(_generate(exp, arm, data, model, out, upstream))
    return [*stages, _evaluate(exp, arm, folder, out, [stages[-1].id])]


def build_plan(exp: ExperimentConfig, folder: Path) -> list[Stage]:
    """Every stage of the experiment in an order that respects what each one reads."""
    renders = {}
    for arm in exp.arms:
        if arm.type == "pixels":
            render = arm_render(exp, arm)
            renders.setdefault(pages_data_name(render), render)
    stages = [_prepare(exp, folder, TEXT_DATA, None), _references(exp, folder),
              *(_prepare(exp, folder, name, render) for name, render in renders.items())]
    # Arms that read another arm's model come after every arm that trains one.
    for arm in sorted(exp.arms, key=lambda arm: arm.model_of is not None):
        stages += _arm_stages(exp, folder, arm)
    return stages
