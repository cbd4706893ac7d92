"""The loop guard (inference/loop_guard.py), measured: ROUGE and the share of summaries that loop, side by side, per
candidate guard, so that the default (GenerationSettings.no_repeat_ngram_size) is chosen by these figures.

Guards: none; no n-gram of 3 or of 4 tokens twice in the summary; the same 3-gram block by transformers' own
processor, which counts the prompt's n-grams too (this project's guard before inference/loop_guard.py); the
official DeepSeek-OCR recipe's, no n-gram of 30 tokens twice within the last 90.

(a) The tiny-random preset (float32, CPU) summarizing the first --documents (128; --quick: 16) bundled SciTLDR-A
    test documents with the default generation settings but the guard, on torch and on the llama.cpp engine (an
    F32 GGUF export of the same weights, where llama-cpp-python and its converter are installed). A random model
    loops when nothing stops it, so this is where a guard shows what it prevents. Then the goal: the default
    settings as they are, on all 618 test documents, on each engine (--quick: 32).
(b) The CPU smoke experiment, `python -m experiments.run configs/experiments/smoke-cpu.json --max-samples 16
    --max-steps 20 --test-samples 16` (--quick: 8, 4, 8; --full-smoke: also at the config's own sizes), run once
    per guard in one experiment folder with the config's generation block's guard replaced: trained once, then
    regenerated and rescored per guard. Every arm that generates, from its metrics.json; Lead-3 once, as the
    reference.
(c) Those runs' text arm, whose prompt holds the document's own tokens: the 3-gram block on the summary against
    transformers' on prompt and summary, on the same test documents with the arm's saved settings.

A summary loops when one word 4-gram occurs 3 times or more (evaluation/repetition.py); `max_4gram` is the most
times any summary repeats one word 4-gram. Writes benchmarks/results/loop_guard.md and .json (--quick: printed
only); a rerun with the same --workdir reuses (a)'s rows and the trained smoke models. Torch runs on one thread
here and in the smoke experiment's processes: the figures are summaries, not times, and one thread is the fastest
on a machine whose cores other work shares.

    python -m benchmarks.bench_loop_guard [--quick] [--documents N] [--full-smoke] [--workdir DIR]
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from benchmarks.cli import table
from config.cli import Parser, run_command

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "configs" / "experiments" / "smoke-cpu.json"
RESULTS = ROOT / "benchmarks" / "results" / "loop_guard.md"
TRANSFORMERS_3 = "3-gram, transformers (prompt too)"
# Guard name -> its generation settings; TRANSFORMERS_3 runs through transformers' processor instead (torch only).
GUARDS = {
    "none": dict(no_repeat_ngram_size=0, no_repeat_ngram_window=0),
    TRANSFORMERS_3: dict(no_repeat_ngram_size=3, no_repeat_ngram_window=0),
    "3-gram": dict(no_repeat_ngram_size=3, no_repeat_ngram_window=0),
    "4-gram": dict(no_repeat_ngram_size=4, no_repeat_ngram_window=0),
    "30-gram in 90 (DeepSeek-OCR recipe)": dict(no_repeat_ngram_size=30, no_repeat_ngram_window=90),
}
FLOAT32 = dict(device="cpu", dtype="float32")
THREADS = 1


def log(message: str) -> None:
    print(f"[loop-guard] {message}", file=sys.stderr, flush=True)


def bundled_test(count: Optional[int]) -> tuple[list[str], list[list[str]]]:
    """Texts and reference lists of the bundled test split, first `count` (all when None)."""
    from data.dataset_loader import BUNDLED_DIR

    lines = (BUNDLED_DIR / "test.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()][:count]
    return [" ".join(r["source"]) for r in records], [r["target"] for r in records]


def max_repeats(texts: list[str]) -> int:
    """The most times one word 4-gram occurs in any one of `texts`."""
    from evaluation.repetition import ngrams

    return max((max(Counter(ngrams(text)).values(), default=0) for text in texts), default=0)


def figures(summaries: list[str], references: list[list[str]]) -> dict:
    from evaluation.metrics import evaluate_pairs
    from evaluation.repetition import repetition_stats

    scores = evaluate_pairs(summaries, references, bootstrap=0, workers=1, progress=False)["scores"]
    repetition = repetition_stats(summaries)
    return {"documents": len(summaries), "loop_share": repetition["loop_share"], "looping": repetition["looping"],
            "rep_4": repetition["repeated_ngram_rate"], "max_4gram": max_repeats(summaries),
            **{metric: round(scores[metric], 2) for metric in ("rouge1", "rouge2", "rougeLsum")},
            "mean_words": round(sum(len(s.split()) for s in summaries) / len(summaries), 1)}


class TransformersBlock:
    """An OCR backend whose n-gram block is transformers' NoRepeatNGramLogitsProcessor, as this project's was before
    inference/loop_guard.py: on a decoder-only model it sees the prompt's ids as well as the summary's."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, documents, generate_kwargs: dict) -> list[str]:
        from inference.loop_guard import WINDOW

        batch = self.backend.inputs(documents)
        kwargs = {key: value for key, value in generate_kwargs.items() if key != WINDOW}
        output = self.backend.model.generate(**batch, **kwargs)
        return [text.strip() for text in self.backend.processor.batch_decode(output[:, batch["input_ids"].shape[1]:])]


def summarize(summarizer, texts: list[str], guard: dict, settings=None) -> tuple[list[str], float]:
    """Summaries of `texts` under `settings` (default: the defaults) with the guard replaced, and their seconds."""
    from config import GenerationSettings

    settings = dataclasses.replace(settings or GenerationSettings(), **guard)
    began = time.perf_counter()
    results = summarizer.summarize_documents([summarizer.prepare_text(text) for text in texts], settings)
    return [r.summary for r in results], round(time.perf_counter() - began, 1)


def export_gguf(workdir: Path) -> Optional[Path]:
    """The tiny-random preset exported with an F32 GGUF decoder, or None (with the reason logged) where llama.cpp's
    Python package or converter is missing."""
    from model.checkpoint.export import export_model

    folder = workdir / "tiny-random-f32"
    if not (folder / "gguf").is_dir():
        try:
            import llama_cpp  # noqa: F401

            export_model("tiny-random", folder, "float32", overwrite=True, gguf="f32")
        except Exception as err:  # no llama.cpp: the torch rows still stand
            log(f"llama.cpp engine skipped: {err}")
            return None
    return folder


def tiny_model_rows(workdir: Path, documents: int, everything: Optional[int]) -> list[dict]:
    """(a): every guard on `documents` documents (torch; the llama.cpp engine all but transformers' block), then
    the default settings on `everything` documents (None: all) per engine. Kept in `workdir` for a rerun."""
    from data.jsonl import write_json_atomic

    kept = workdir / f"tiny-random-{documents}-{everything}.json"
    if kept.is_file():
        return json.loads(kept.read_text(encoding="utf-8"))
    rows = _tiny_model_rows(workdir, documents, everything)
    write_json_atomic(kept, rows)
    return rows


def _tiny_model_rows(workdir: Path, documents: int, everything: Optional[int]) -> list[dict]:
    from config import GenerationSettings, LoadSettings
    from inference.summarizer import DeepSeekSummarizer

    engines = {"torch": lambda: DeepSeekSummarizer.from_pretrained("tiny-random", LoadSettings(**FLOAT32))}
    gguf = export_gguf(workdir)
    if gguf is not None:
        engines["llamacpp"] = lambda: DeepSeekSummarizer.from_pretrained(gguf, LoadSettings(**FLOAT32),
                                                                         engine="llamacpp")
    default = {name: getattr(GenerationSettings(), name) for name in GUARDS["none"]}
    rows = []
    for engine, load in engines.items():
        summarizer = load()
        plain = summarizer.backend
        runs = [(name, guard, documents) for name, guard in GUARDS.items()
                if name != TRANSFORMERS_3 or engine == "torch"] + [("default", default, everything)]
        for name, guard, count in runs:
            texts, references = bundled_test(count)
            summarizer.backend = TransformersBlock(plain) if name == TRANSFORMERS_3 else plain
            log(f"(a) {engine}, {name}: {len(texts)} documents")
            summaries, seconds = summarize(summarizer, texts, guard)
            rows.append({"engine": engine, "guard": name, **figures(summaries, references), "seconds": seconds})
    return rows


def smoke_config(folder: Path, guard: dict) -> Path:
    """The smoke config with its generation block's guard replaced."""
    config = json.loads(SMOKE_CONFIG.read_text(encoding="utf-8"))
    config["generation"] = {**config["generation"], **guard}
    path = folder / f"smoke-{guard['no_repeat_ngram_size']}-{guard['no_repeat_ngram_window']}.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def smoke_runs(quick: bool, full: bool) -> dict[str, list[str]]:
    """Experiment folder name -> the runner's size flags: the small run, and the config's own sizes with `full`."""
    runs = {"smoke-quick": ["--max-samples", "8", "--max-steps", "4", "--test-samples", "8"]} if quick else \
        {"smoke": ["--max-samples", "16", "--max-steps", "20", "--test-samples", "16"]}
    return {**runs, "smoke-full": []} if full else runs


def smoke_rows(folder: Path, sizes: list[str]) -> list[dict]:
    """(b): the smoke experiment per guard (transformers' block is not a setting, so it has no row here), ROUGE-1
    with its 95% interval."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name, guard in GUARDS.items():
        if name == TRANSFORMERS_3:
            continue
        log(f"(b) {folder.name}, {name}")
        command = [sys.executable, "-m", "experiments.run", str(smoke_config(folder.parent, guard)),
                   "--output-dir", str(folder), *sizes]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        for arm in json.loads((folder / "results.json").read_text(encoding="utf-8"))["arms"]:
            if arm["type"] == "lead-3" and any(row["arm"] == arm["name"] for row in rows):
                continue
            metrics = json.loads((folder / "arms" / arm["name"] / "metrics.json").read_text(encoding="utf-8"))
            system, = metrics["systems"].values()
            repetition, low_high = system["repetition"], system["intervals"]["rouge1"]
            rows.append({"arm": arm["name"], "guard": "(reads no guard)" if arm["type"] == "lead-3" else name,
                         "documents": metrics["counts"]["examples"], "loop_share": repetition["loop_share"],
                         "looping": repetition["looping"], "rep_4": repetition["repeated_ngram_rate"],
                         "rouge1": round(system["scores"]["rouge1"], 2),
                         "rouge1_95": f"{low_high[0]:.1f}-{low_high[1]:.1f}",
                         **{metric: round(system["scores"][metric], 2) for metric in ("rouge2", "rougeLsum")},
                         "empty": metrics["counts"].get("empty_predictions", 0)})
    return rows


def prompt_rows(folder: Path) -> list[dict]:
    """(c): the smoke run's text arm, whose prompt holds the document's own tokens, with the 3-gram block on the
    summary (this project's) and on prompt and summary (transformers'), on its test documents and its settings."""
    from config import LoadSettings
    from data.jsonl import iter_jsonl
    from inference.summarizer import DeepSeekSummarizer

    rows = []
    for arm in json.loads((folder / "results.json").read_text(encoding="utf-8"))["arms"]:
        if arm["type"] != "text":
            continue
        place = folder / "arms" / arm["name"]
        recorded = json.loads((place / "predictions.jsonl.settings.json").read_text(encoding="utf-8"))
        scored = {str(line["id"]) for line in iter_jsonl(place / "predictions.jsonl")}
        records = [r for r in iter_jsonl(Path(recorded["data_file"])) if str(r["id"]) in scored]
        texts, references = [r["text"] for r in records], [r.get("references") or [r["summary"]] for r in records]
        summarizer = DeepSeekSummarizer.from_pretrained(str(place / "model"), LoadSettings(device="cpu"))
        plain = summarizer.backend
        for name in ("3-gram", TRANSFORMERS_3):
            summarizer.backend = TransformersBlock(plain) if name == TRANSFORMERS_3 else plain
            log(f"(c) {folder.name}, {arm['name']}, {name}: {len(texts)} documents")
            summaries, _ = summarize(summarizer, texts, GUARDS[name], summarizer.generation)
            rows.append({"run": folder.name, "arm": arm["name"], "guard": name, **figures(summaries, references)})
    return rows


def write(output: Path, tables: dict[str, list[dict]], titles: dict[str, str], command: str) -> None:
    from benchmarks.run_all import machine
    from data.jsonl import write_json_atomic, write_text_atomic

    report = f"Machine: {machine()}. Reproduce with `{command}`.\n\n" + "\n\n".join(
        f"## {titles[key]}\n\n{table(rows)}" for key, rows in tables.items()) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, report)
    write_json_atomic(output.with_suffix(".json"), {"machine": machine(), "command": command, "titles": titles,
                                                    "guards": GUARDS, **tables})


def run(args) -> None:
    import torch

    torch.set_num_threads(THREADS)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-loop-guard-"))
    tables = {"tiny_random": tiny_model_rows(workdir, args.documents or (16 if args.quick else 128),
                                             32 if args.quick else None)}
    titles = {"tiny_random": "(a) tiny-random on the bundled test documents, default settings but the guard"}
    print(table(tables["tiny_random"]), flush=True)
    runs = smoke_runs(args.quick, args.full_smoke)
    for name, sizes in runs.items():
        tables[name] = smoke_rows(workdir / name, sizes)
        titles[name] = f"(b) the CPU smoke experiment per guard: `python -m experiments.run " \
                       f"{' '.join([str(SMOKE_CONFIG.relative_to(ROOT)), *sizes])}`"
        print(table(tables[name]), flush=True)
    tables["prompt"] = [row for name in runs for row in prompt_rows(workdir / name)]
    titles["prompt"] = "(c) the smoke runs' text arm: the 3-gram block on the summary, or on prompt and summary"
    print(table(tables["prompt"]), flush=True)
    if not args.quick:
        flags = [f"--documents {args.documents}" if args.documents else "", "--full-smoke" if args.full_smoke else ""]
        write(RESULTS, tables, titles, " ".join(["python -m benchmarks.bench_loop_guard", *filter(None, flags)]))
        print(f"wrote {RESULTS} and {RESULTS.with_suffix('.json').name}")


def main(argv=None) -> int:
    import argparse

    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer documents and a smaller smoke run; printed "
                        "only")
    parser.add_argument("--documents", type=int, help="test documents each guard summarizes in (a) (default 128, "
                        "--quick 16); the default settings summarize all 618 (--quick 32)")
    parser.add_argument("--full-smoke", action="store_true", help="(b) and (c) also at the smoke config's own sizes "
                        "(a few times longer)")
    parser.add_argument("--workdir", help="where the GGUF export and the smoke experiment go (default: a new "
                        "temporary folder); a rerun with the same one reuses them")
    return run_command(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
