"""The experiment's results: one row per arm in results.json and results.md, and ROUGE against compression.

Every arm is scored on the same references (`data/references.jsonl`). Compression is text tokens over the tokens
the DeepSeek-OCR decoder reads for the document: vision tokens for pages, the (possibly truncated) text tokens
for the text arm, so the text arm sits at 1x (above it only when documents were cut). The seq2seq baseline reads
text with its own tokenizer and Lead-N reads nothing, so they have no compression and are drawn as lines.

How each arm read its documents within the decoder's context (strategies, windows, pages and share of the
document read, truncations) and how much its summaries repeat themselves (loop share, rep-4) are the evaluation's
figures in metrics.json (`reading`, and `repetition` per system), shown where it has them.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from data.jsonl import iter_jsonl, write_json_atomic
from experiments.config import LEAD_TYPES, ExperimentConfig, lead_sentences, model_arm
from experiments.plan import evaluation_baseline

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LABELS = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L", "rougeLsum": "R-Lsum"}
DESCRIBE = {"pixels": "DeepSeek-OCR reading pages", "text": "DeepSeek-OCR decoder reading text tokens",
            "seq2seq": "seq2seq baseline on text"}


def _reads(arm) -> str:
    if arm.type in LEAD_TYPES:
        return f"first {lead_sentences(arm)} sentences"
    return DESCRIBE[arm.type] + (f" (the model of arm {arm.model_of})" if arm.model_of else "")


def _max_source_length(model_folder: Path) -> Optional[int]:
    processor = json.loads((model_folder / "processor_config.json").read_text(encoding="utf-8"))
    return processor.get("max_source_length")


def _mean(values: list[float]) -> Optional[float]:
    return round(sum(values) / len(values), 2) if values else None


def _repetition(system: dict[str, Any]) -> dict[str, Any]:
    """Loop share and rep-4 of the arm's summaries, where the evaluation reports them (else empty)."""
    found = system.get("repetition") or {}
    return {key: found.get(key) for key in ("loop_share", "repeated_ngram_rate", "definition")}


def arm_result(exp: ExperimentConfig, folder: Path, arm, markers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    arm_folder = folder / "arms" / arm.name
    model_folder = folder / "arms" / model_arm(exp, arm).name / "model"
    metrics = json.loads((arm_folder / "metrics.json").read_text(encoding="utf-8"))
    system = metrics["systems"][evaluation_baseline(arm) or "model"]
    compression = metrics["compression"]
    train = markers.get(f"train/{arm.name}", {})
    generate = markers.get(f"generate/{arm.name}", {})
    read = metrics.get("reading")  # None for Lead-N, which reads nothing, and an evaluation without it
    row: dict[str, Any] = {
        "name": arm.name, "type": arm.type, "reads": _reads(arm), "model_of": arm.model_of,
        "scores": system["scores"], "intervals": system.get("intervals"),
        "reading": read, "repetition": _repetition(system),
        "documents": metrics["counts"]["examples"],
        "missing_predictions": metrics["counts"].get("missing_predictions", 0),
        "empty_predictions": metrics["counts"].get("empty_predictions", 0),
        "text_tokens": (compression["text_tokens"] or {}).get("mean"),
        "vision_tokens": None, "decoder_document_tokens": None, "compression_ratio": None,
        "truncated_documents": read["truncated"] if read else None,
        "train_seconds": train.get("seconds"), "train_steps": train.get("train_steps"),
        "step_seconds": train.get("step_seconds"),
        "generation_seconds": generate.get("seconds"),
        "generation_seconds_per_document": round(generate["seconds"] / generate["generated"], 4)
        if generate.get("generated") else None,
        # [step, eval_loss] of each evaluation during training: whether (and how far) the model learned.
        "val_losses": train.get("val_losses"),
        "folder": str(arm_folder),
    }
    if arm.type == "pixels":
        row["vision_tokens"] = (compression["vision_tokens"] or {}).get("mean")
        row["decoder_document_tokens"] = row["vision_tokens"]
        row["compression_ratio"] = compression["overall_ratio"]
        row["render"] = _render_of(model_folder)
    elif arm.type == "text":
        # The document's text tokens over those its first reading took, as each predictions line says: 1x whole
        # (or in windows), more when cut.
        lines = list(iter_jsonl(arm_folder / "predictions.jsonl"))
        fed = sum(p["tokens_read"] for p in lines)
        row["decoder_document_tokens"] = _mean([p["tokens_read"] for p in lines])
        row["compression_ratio"] = round(sum(p["document_tokens"] for p in lines) / fed, 4) if fed else None
        row["max_source_length"] = _max_source_length(model_folder)
        row["truncated_training_inputs"] = train.get("truncated_sources")  # documents cut, over all steps
    return row


def collect(exp: ExperimentConfig, folder: Path, markers: dict[str, dict[str, Any]], config_path: str
            ) -> dict[str, Any]:
    arms = [arm_result(exp, folder, arm, markers) for arm in exp.arms]
    stages = sorted(markers.values(), key=lambda m: m["finished"])
    return {
        "experiment": exp.name, "config": config_path, "folder": str(folder),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "accelerator": _accelerator()},
        "dataset": {"source": exp.dataset.source, "subset": exp.dataset.subset,
                    "test_documents": exp.dataset.test_samples,
                    "references": str(folder / "data" / "references.jsonl"),
                    "synthetic": _synthetic(folder / "data" / "references.jsonl")},
        "model": exp.training.get("model_name"),
        "arms": arms,
        "stages": [{k: m[k] for k in ("stage", "seconds", "command", "continued_after_interruption")} for m in stages],
        "total_stage_seconds": round(sum(m["seconds"] for m in stages), 1),
        "comment": exp.comment,
    }


def _synthetic(references: Path) -> bool:
    """Whether the scored documents are made up (their records say `synthetic`: data/dataset_loader.py)."""
    return any(record.get("synthetic") for record in iter_jsonl(references))


def _render_of(model_folder: Path) -> dict[str, Any]:
    path = model_folder / "render_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {key: data[key] for key in ("mode", "font_size") if key in data}


def _accelerator() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _learning(val_losses: Optional[list[list[float]]]) -> str:
    """The first and last validation loss, with their steps."""
    if not val_losses:
        return "-"
    (first_step, first), (last_step, last) = val_losses[0], val_losses[-1]
    return f"{first:.3f} (step {first_step}) -> {last:.3f} (step {last_step})"


def _reads_cell(row: dict[str, Any]) -> str:
    """What the arm reads, with its render, how its documents were read where not whole, and truncations."""
    reads = row["reads"] + (f" ({row['render']['mode']}, {row['render']['font_size']} px)"
                            if row.get("render") else "")
    strategies = (row.get("reading") or {}).get("strategies", {})
    if set(strategies) - {"direct"}:
        reads += "; read " + ", ".join(f"{count} {strategy}" for strategy, count in strategies.items())
    if row.get("truncated_documents"):
        limit = row.get("max_source_length")
        reads += f"; {row['truncated_documents']} docs cut to " + (f"{limit} tokens" if limit else "what fits")
    return reads


def _number(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _reading_cells(row: dict[str, Any]) -> list[str]:
    """Pages read / pages, share of the document read, windows per document; loop share and rep-4."""
    read, repetition = row.get("reading") or {}, row.get("repetition") or {}
    pages = f"{read['mean_pages_read']:.1f}/{read['mean_pages']:.1f}" if read.get("mean_pages") else "-"
    return [pages, _number(read.get("mean_share_read"), 2), _number(read.get("mean_windows"), 1),
            _number(repetition.get("loop_share"), 2), _number(repetition.get("repeated_ngram_rate"), 3)]


def _dataset_line(results: dict[str, Any]) -> str:
    dataset = results["dataset"]
    synthetic = (" (**synthetic** documents, made up for a run without the real data: each record says "
                 "`synthetic: true`)" if dataset.get("synthetic") else "")
    return (f"Config `{results['config']}`, {dataset['test_documents']} test documents of `{dataset['source']}`"
            f"{synthetic}, accelerator: {results['machine']['accelerator']}, {results['machine']['cpus']} CPUs. "
            "ROUGE F1 x100 (rouge-score, stemming; R-Lsum summary-level).")


def _definition(results: dict[str, Any], block: str) -> str:
    """The evaluation's own definition of a block of its figures (the same for every arm), or why cells are empty."""
    found = [(row.get(block) or {}).get("definition") for row in results["arms"]]
    return next((d for d in found if d), "not reported by this evaluation")


def markdown(results: dict[str, Any], note: str = "") -> str:
    """results.md: the table, then each stage with its time and command."""
    head = ["arm", "reads", *[LABELS[m] for m in METRICS], "R-Lsum 95% CI", "empty", "doc text tokens",
            "decoder doc tokens", "compression", "pages read", "share read", "windows", "loop share", "rep-4",
            "train s", "steps", "s/step", "val loss first -> last", "generate s"]
    lines = [f"# Experiment {results['experiment']}", "", note, "" if note else None, _dataset_line(results), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["arms"]:
        interval = (row["intervals"] or {}).get("rougeLsum")
        cells = [row["name"], _reads_cell(row), *[_cell(row["scores"][m], 2) for m in METRICS],
                 f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "-",
                 f"{row['empty_predictions']}/{row['documents']}" if row["type"] not in LEAD_TYPES else "-",
                 _cell(row["text_tokens"]), _cell(row["decoder_document_tokens"]),
                 f"{row['compression_ratio']:.2f}x" if row["compression_ratio"] else "-", *_reading_cells(row),
                 _cell(row["train_seconds"]), _cell(row["train_steps"]), _cell(row["step_seconds"], 3),
                 _learning(row["val_losses"]), _cell(row["generation_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Empty: generated summaries with no text (scored 0). Compression: document text tokens / tokens "
              "the decoder reads for the document (vision tokens for pages). Pages read, share read, windows: per "
              "document on average, how the decoder read it within its context (fit reads every page, denser; "
              f"hierarchical every page or token in windows, then their summaries): {_definition(results, 'reading')}. "
              f"Loop share and rep-4: {_definition(results, 'repetition')}. Times are wall seconds of each stage "
              "on this machine; s/step is the trainer's own runtime per optimizer step. Val loss: the loss on the "
              "validation records at the first and the last evaluation during training.",
              "", "## Stages", "", "| stage | seconds | command |", "|---|---|---|"]
    for stage in results["stages"]:
        again = " (continued after an interruption)" if stage["continued_after_interruption"] else ""
        lines.append(f"| {stage['stage']}{again} | {stage['seconds']:.1f} | `{stage['command']}` |")
    lines += ["", f"Total: {results['total_stage_seconds']:.0f} s of stage time.", ""]
    if results["comment"]:
        lines += ["## Notes from the config", "", *[f"- {c}" for c in results["comment"]], ""]
    return "\n".join(line for line in lines if line is not None)


def plot(results: dict[str, Any], path: Path) -> None:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum against compression, with 95% intervals; baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("rouge1", "rouge2", "rougeLsum")
    fig, axes = plt.subplots(1, len(shown), figsize=(13, 4.2), sharex=True)
    placed = [r for r in results["arms"] if r["compression_ratio"]]
    lines = [r for r in results["arms"] if not r["compression_ratio"]]
    for ax, metric in zip(axes, shown):
        for row in placed:
            score, interval = row["scores"][metric], (row["intervals"] or {}).get(metric)
            error = [[score - interval[0]], [interval[1] - score]] if interval else None
            ax.errorbar([row["compression_ratio"]], [score], yerr=error, fmt="o" if row["type"] == "pixels" else "*",
                        markersize=7 if row["type"] == "pixels" else 12, capsize=3, label=row["name"])
            ax.annotate(row["name"], (row["compression_ratio"], score), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        pixels = sorted((r["compression_ratio"], r["scores"][metric]) for r in placed if r["type"] == "pixels")
        if len(pixels) > 1:
            ax.plot(*zip(*pixels), "-", color="grey", alpha=0.5)
        for row, style in zip(lines, ("--", ":", "-.", (0, (5, 1)))):
            ax.axhline(row["scores"][metric], linestyle=style, color="black", alpha=0.6, label=row["name"])
        ax.set_title(LABELS[metric].replace("R-", "ROUGE-"))
        ax.set_xlabel("compression (document text tokens / decoder tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1 x 100")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{results['experiment']}: {results['dataset']['test_documents']} documents, "
                 f"{results['machine']['accelerator']}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix tells matplotlib the format
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(results: dict[str, Any], folder: Path, note: str = "") -> dict[str, Path]:
    paths = {"json": folder / "results.json", "md": folder / "results.md", "plot": folder / "rouge_vs_compression.png"}
    write_json_atomic(paths["json"], results)
    tmp = paths["md"].with_name(".results.md.tmp")
    tmp.write_text(markdown(results, note), encoding="utf-8")
    os.replace(tmp, paths["md"])
    plot(results, paths["plot"])
    return paths
