"""Score predictions against a prepared dataset: ROUGE with 95% intervals, a Lead-3 baseline, compression.

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

from config.cli import Parser, run_command
from data.jsonl import iter_jsonl_lines, write_json_atomic, write_jsonl_atomic
from evaluation.metrics import compression_stats, distribution, evaluate_pairs, lead_n, length_stats, parallel_map
from evaluation.report import format_table, plot_rouge_vs_compression

BASELINES = ("lead-3",)
MAX_LISTED_PROBLEMS = 50


class EvaluationError(Exception):
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


def _score_systems(inputs: Inputs, args: argparse.Namespace) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """evaluate_pairs per system (model, baseline) on the same examples; returns results and the texts scored."""
    references = [e["references"] for e in inputs.examples]
    options = dict(workers=args.workers, bootstrap=args.bootstrap, seed=args.seed, progress=None,
                   with_precision_recall=args.precision_recall, return_per_example=True)
    texts: dict[str, list[str]] = {}
    if inputs.predictions is not None:
        found = [inputs.predictions.get(e["id"]) for e in inputs.examples]
        texts["model"] = [p["prediction"] if p else "" for p in found]
        inputs.counts["missing_predictions"] = sum(p is None for p in found)
        inputs.counts["empty_predictions"] = sum(p is not None and not p["prediction"].strip() for p in found)
    if args.baseline == "lead-3":
        texts["lead-3"] = parallel_map(lead_n, [e["text"] for e in inputs.examples], workers=args.workers,
                                       desc="lead-3")
    return {name: evaluate_pairs(t, references, **options) for name, t in texts.items()}, texts


def _status(inputs: Inputs, example_id: str) -> str:
    found = inputs.predictions.get(example_id)
    return "missing" if found is None else "empty" if not found["prediction"].strip() else "ok"


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Read, score, write metrics.json (and the optional per-example file and plot); return the metrics."""
    inputs = read_inputs(Path(args.references), Path(args.predictions) if args.predictions else None)
    if not inputs.examples:
        raise EvaluationError(f"no usable reference records in {args.references}")
    if inputs.predictions is not None and not inputs.predictions:
        raise EvaluationError(f"no prediction id in {args.predictions} matches a reference id in {args.references}")
    systems, texts = _score_systems(inputs, args)
    documents = _document_stats(inputs, args.workers)
    per_example = {name: result.pop("per_example") for name, result in systems.items()}
    settings = [result.pop("settings") for result in systems.values()][0]  # identical for every system
    metrics: dict[str, Any] = {
        "systems": systems,
        "counts": {"examples": len(inputs.examples), **inputs.counts},
        "compression": compression_stats(*zip(*((d["text_tokens"], d["vision_tokens"], d["pages"])
                                                 for d in documents))),
        "lengths": {"references (first)": length_stats([e["references"][0] for e in inputs.examples]),
                    **{name: length_stats(t) for name, t in texts.items()}},
        "settings": {**settings, "examples": "every valid reference record, in file order",
                     "missing_predictions": "scored as an empty summary (F1 0) and counted",
                     "empty_predictions": "scored as they are (F1 0) and counted",
                     "baseline": args.baseline, "workers": args.workers},
        "versions": _versions(),
        "inputs": {"references": str(args.references), "predictions": args.predictions},
        "problems": inputs.problems[:MAX_LISTED_PROBLEMS],
    }
    if inputs.predictions:
        metrics["generation"] = {field: distribution([v for p in inputs.predictions.values()
                                                      if (v := _number(p.get(field))) is not None])
                                 for field in ("generated_tokens", "seconds")}
    write_json_atomic(args.output, metrics)
    rows = [{"id": e["id"], **d, **{name: scores[i] for name, scores in per_example.items()},
             **({"status": _status(inputs, e["id"])} if inputs.predictions is not None else {})}
            for i, (e, d) in enumerate(zip(inputs.examples, documents))]
    if args.per_example:
        write_jsonl_atomic(args.per_example, rows)
    if args.plot:
        note = plot_rouge_vs_compression(rows, list(systems), args.plot)
        if note:
            print(f"plot: {note}", file=sys.stderr)
    return metrics


def _count(minimum: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number
    return parse


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m evaluation.evaluate",
        description="ROUGE-1/2/L/Lsum (rouge-score, Porter stemming, F1 x100) of predictions against a prepared "
                    "dataset, with bootstrap 95% intervals, an optional Lead-3 baseline on the same examples, "
                    "and compression statistics (text tokens / vision tokens).",
        epilog="References missing a prediction are scored as empty summaries and counted.")
    parser.add_argument("references", help="prepared JSONL (id, text, summary, references, optional render)")
    parser.add_argument("predictions", nargs="?",
                        help="JSONL of {id, prediction[, pages, vision_tokens, generated_tokens, seconds]}; "
                             "may be omitted with --baseline")
    parser.add_argument("--output", metavar="JSON", default="metrics.json", help="metrics JSON, written atomically "
                                                                 "(default: %(default)s)")
    parser.add_argument("--baseline", choices=BASELINES, help="also score an extractive baseline without a model")
    parser.add_argument("--per-example", metavar="JSONL", help="write per-example scores and document stats")
    parser.add_argument("--plot", metavar="PNG", help="plot ROUGE against compression ratio by document length")
    parser.add_argument("--workers", metavar="N", type=_count(1), default=None,
                        help="scoring processes (default: all cores for 1000+ examples, else 1)")
    parser.add_argument("--bootstrap", metavar="N", type=_count(0), default=1000,
                        help="bootstrap resamples for the intervals, 0 for none (default: %(default)s)")
    parser.add_argument("--precision-recall", action="store_true", help="also report precision and recall")
    parser.add_argument("--seed", metavar="S", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    return parser


def run(args: argparse.Namespace) -> None:
    if not args.predictions and not args.baseline:
        raise EvaluationError("give a PREDICTIONS file, --baseline lead-3, or both")
    metrics = evaluate(args)
    problems = metrics["problems"]
    for message in problems[:10]:
        print(f"warning: {message}", file=sys.stderr)
    if len(problems) > 10:
        print(f"warning: ... {len(problems) - 10} more listed in {args.output}", file=sys.stderr)
    print(format_table(metrics["systems"]))
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in metrics["counts"].items())
    ratio = metrics["compression"]["overall_ratio"]
    print(f"{counts}; compression ratio: {ratio if ratio is not None else 'n/a'}")
    print(f"wrote {args.output}")


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(build_parser(), run, argv, (EvaluationError, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
