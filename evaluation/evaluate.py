"""Score predictions against a prepared dataset: ROUGE with 95% intervals and repetition (loops, repeated 4-grams)
per system, a Lead-3 baseline, compression, and how the documents were read within the model's context.
The stage function is `evaluate(EvaluateJob) -> metrics`; the command builds the same job from its flags:

    python -m evaluation.evaluate prepared_data/test.jsonl predictions.jsonl --output metrics.json
    python -m evaluation.evaluate prepared_data/test.jsonl --baseline lead-3 --output lead3.json

Every reference record is one example. A reference without a prediction (or with an empty one) is scored as an
empty summary (F1 0): the conservative choice, so a model cannot gain by skipping hard documents. Bad lines,
duplicate ids and predictions for unknown ids are counted in metrics.json and listed on stderr, never dropped
silently.
"""
from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Optional

from config import UserError
from config.cli import Parser, add_settings_arguments, run_command, settings_from_args
from config.jobs import EvaluateJob
from data.jsonl import iter_jsonl_lines, write_json_atomic, write_jsonl_atomic
from evaluation.metrics import (
    compression_stats,
    distribution,
    evaluate_pairs,
    lead_n,
    length_stats,
    parallel_map,
    reading_stats,
)
from evaluation.repetition import repetition_stats
from evaluation.report import format_table, plot_rouge_vs_compression, reading_line

MAX_LISTED_PROBLEMS = 50


class EvaluationError(UserError):
    """Bad input: reported as one line and a non-zero exit."""


class Inputs:
    """Reference examples (file order) and predictions by id, with counts and problems met while reading."""

    def __init__(self) -> None:
        self.examples: list[dict[str, Any]] = []
        self.predictions: Optional[dict[str, dict[str, Any]]] = None
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []

    def problem(self, counter: str, message: str) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + 1
        self.problems.append(message)


def _objects(path: Path, label: str, inputs: Inputs) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per readable line; a line that is not a JSON object is counted and skipped."""
    if not path.is_file():
        raise EvaluationError(f"cannot read {label} file {path}: no such file")
    yield from iter_jsonl_lines(path, on_error=lambda message: inputs.problem(f"unreadable_{label}_lines", message))


def _references_of(record: dict[str, Any]) -> list[str]:
    refs = record.get("references")
    if isinstance(refs, list):
        refs = [r for r in refs if isinstance(r, str) and r.strip()]
    if not refs and isinstance(record.get("summary"), str) and record["summary"].strip():
        refs = [record["summary"]]
    return refs or []


def read_inputs(references: Path, predictions: Optional[Path]) -> Inputs:
    inputs = Inputs()
    seen: set[str] = set()
    for number, record in _objects(references, "reference", inputs):
        refs, text = _references_of(record), record.get("text")
        if record.get("id") is None or not refs or not isinstance(text, str):
            inputs.problem("unreadable_reference_lines",
                           f"{references}:{number}: needs `id`, `text` and `references` or `summary`")
        elif str(record["id"]) in seen:
            inputs.problem("duplicate_reference_ids", f"{references}:{number}: duplicate id {record['id']!r}, "
                                                      "first kept")
        else:
            seen.add(str(record["id"]))
            inputs.examples.append({"id": str(record["id"]), "text": text, "references": refs,
                                    "render": record.get("render") or {}})
    if predictions is None:
        return inputs
    inputs.predictions = {}
    for number, record in _objects(predictions, "prediction", inputs):
        key = None if record.get("id") is None else str(record["id"])
        if key is None or not isinstance(record.get("prediction"), str):
            inputs.problem("unreadable_prediction_lines", f"{predictions}:{number}: needs `id` and a string "
                                                          "`prediction`")
        elif key in inputs.predictions:
            inputs.problem("duplicate_prediction_ids", f"{predictions}:{number}: duplicate id {key!r}, first kept")
        elif key not in seen:
            inputs.problem("unmatched_predictions", f"{predictions}:{number}: id {key!r} is not in the references")
        else:
            inputs.predictions[key] = record
    return inputs


def _number(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _document_stats(inputs: Inputs, workers: Optional[int]) -> list[dict[str, Any]]:
    """Per example: source text tokens, and vision tokens / pages (the prediction's when given, else the
    record's render stats)."""
    from data.tokens import count_text_tokens

    texts = [e["text"] for e in inputs.examples]
    known = [_number(e["render"].get("text_tokens")) for e in inputs.examples]
    missing = [i for i, k in enumerate(known) if k is None]
    for i, count in zip(missing, parallel_map(count_text_tokens, [texts[i] for i in missing], workers=workers,
                                              desc="counting tokens")):
        known[i] = count
    rows = []
    for example, text_tokens in zip(inputs.examples, known):
        prediction = (inputs.predictions or {}).get(example["id"], {})
        vision = _number(prediction.get("vision_tokens")) or _number(example["render"].get("vision_tokens"))
        pages = _number(prediction.get("pages")) or _number(example["render"].get("pages"))
        rows.append({"text_tokens": text_tokens, "vision_tokens": vision, "pages": pages,
                     "compression_ratio": round(text_tokens / vision, 4) if vision else None})
    return rows


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("rouge-score", "pysbd", "nltk", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _score_systems(inputs: Inputs, job: EvaluateJob) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """evaluate_pairs per system (model, baseline) on the same examples; returns results and the texts scored."""
    references = [e["references"] for e in inputs.examples]
    options = dict(workers=job.workers, bootstrap=job.bootstrap, seed=job.seed, progress=None,
                   with_precision_recall=job.precision_recall, return_per_example=True)
    texts: dict[str, list[str]] = {}
    if inputs.predictions is not None:
        found = [inputs.predictions.get(e["id"]) for e in inputs.examples]
        texts["model"] = [p["prediction"] if p else "" for p in found]
        inputs.counts["missing_predictions"] = sum(p is None for p in found)
        inputs.counts["empty_predictions"] = sum(p is not None and not p["prediction"].strip() for p in found)
    if job.baseline == "lead-3":
        texts["lead-3"] = parallel_map(lead_n, [e["text"] for e in inputs.examples], workers=job.workers,
                                       desc="lead-3")
    return {name: evaluate_pairs(t, references, **options) for name, t in texts.items()}, texts


def _status(inputs: Inputs, example_id: str) -> str:
    found = inputs.predictions.get(example_id)
    return "missing" if found is None else "empty" if not found["prediction"].strip() else "ok"


def evaluate(job: EvaluateJob) -> dict[str, Any]:
    """Read, score, write `job.output` (and the optional per-example file and plot); return the metrics written."""
    if not job.predictions and not job.baseline:
        raise EvaluationError("give a PREDICTIONS file, --baseline lead-3, or both")
    inputs = read_inputs(Path(job.references), Path(job.predictions) if job.predictions else None)
    if not inputs.examples:
        raise EvaluationError(f"no usable reference records in {job.references}")
    if inputs.predictions is not None and not inputs.predictions:
        raise EvaluationError(f"no prediction id in {job.predictions} matches a reference id in {job.references}")
    systems, texts = _score_systems(inputs, job)
    documents = _document_stats(inputs, job.workers)
    per_example = {name: result.pop("per_example") for name, result in systems.items()}
    settings = [result.pop("settings") for result in systems.values()][0]  # identical for every system
    for name, result in systems.items():
        result["repetition"] = repetition_stats(texts[name])
    metrics: dict[str, Any] = {
        "systems": systems,
        "counts": {"examples": len(inputs.examples), **inputs.counts},
        "compression": compression_stats(*zip(*((d["text_tokens"], d["vision_tokens"], d["pages"])
                                                 for d in documents))),
        "reading": reading_stats(list(inputs.predictions.values())) if inputs.predictions else None,
        "lengths": {"references (first)": length_stats([e["references"][0] for e in inputs.examples]),
                    **{name: length_stats(t) for name, t in texts.items()}},
        "settings": {**settings, "examples": "every valid reference record, in file order",
                     "missing_predictions": "scored as an empty summary (F1 0) and counted",
                     "empty_predictions": "scored as they are (F1 0) and counted",
                     "baseline": job.baseline, "workers": job.workers},
        "versions": _versions(),
        "inputs": {"references": job.references, "predictions": job.predictions},
        "problems": inputs.problems[:MAX_LISTED_PROBLEMS],
    }
    if inputs.predictions:
        metrics["generation"] = {field: distribution([v for p in inputs.predictions.values()
                                                      if (v := _number(p.get(field))) is not None])
                                 for field in ("generated_tokens", "seconds")}
    Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.output, metrics)
    rows = [{"id": e["id"], **d, **{name: scores[i] for name, scores in per_example.items()},
             **({"status": _status(inputs, e["id"])} if inputs.predictions is not None else {})}
            for i, (e, d) in enumerate(zip(inputs.examples, documents))]
    if job.per_example:
        write_jsonl_atomic(job.per_example, rows)
    if job.plot:
        note = plot_rouge_vs_compression(rows, list(systems), job.plot)
        if note:
            print(f"plot: {note}", file=sys.stderr)
    return metrics


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m evaluation.evaluate",
        description="ROUGE-1/2/L/Lsum (rouge-score, Porter stemming, F1 x100) of predictions against a prepared "
                    "dataset, with bootstrap 95% intervals, an optional Lead-3 baseline on the same examples, "
                    "and compression statistics (text tokens / vision tokens).",
        epilog="References missing a prediction are scored as empty summaries and counted.")
    add_settings_arguments(parser, EvaluateJob)
    return parser


def run(args: argparse.Namespace) -> None:
    job = settings_from_args(build_parser(), EvaluateJob, args)
    metrics = evaluate(job)
    problems = metrics["problems"]
    for message in problems[:10]:
        print(f"warning: {message}", file=sys.stderr)
    if len(problems) > 10:
        print(f"warning: ... {len(problems) - 10} more listed in {job.output}", file=sys.stderr)
    print(format_table(metrics["systems"]))
    if metrics["reading"]:
        print(reading_line(metrics["reading"]))
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in metrics["counts"].items())
    ratio = metrics["compression"]["overall_ratio"]
    print(f"{counts}; compression ratio: {ratio if ratio is not None else 'n/a'}")
    print(f"wrote {job.output}")


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
