"""A long document on a CPU, end to end: a 40-page document (render, encode, windows, the final 128-token summary)
with the llamacpp engine, beside the same decoder reading the document's text tokens instead of its pages, and
beside torch.

Rows (each in its own child process at 2 threads, on the real-size model of benchmarks.bench_cpu_serving, whose
artifacts it builds or reuses; --quick: tiny-random):
- llamacpp Q4_K_M, pages in small mode (640 px, 111 positions a page): 40 pages fit the 8,192-position context whole;
- llamacpp Q4_K_M, pages in base mode (1024 px, 273 a page): they do not, so windows that fit are summarized
  together, then their summaries (inference/long_documents.py, `long_documents` auto);
- llamacpp Q4_K_M reading text tokens (a folder whose processor reads text): windows of the text, then their
  summaries: what reading the pages saves;
- torch auto, pages in small mode: the project's torch engine on the same document.
Every generation is forced to its 128 tokens (min_new_tokens), window summaries included: the worst case. Per row:
seconds end to end and per stage (render, page encoding, the decoder's first round, later rounds), pages encoded
per second, windows and levels, the longest prompt. Results: benchmarks/results/long_document.md and .json.

    python -m benchmarks.bench_long_document            # real size: the cpu-serving artifacts (built once)
    python -m benchmarks.bench_long_document --quick    # tiny-random: the same code path in a minute
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchmarks.bench_cpu_serving import THREADS, default_workdir, ensure_artifacts, log, peak_rss
from benchmarks.cli import table
from config.cli import Parser, run_command

ROOT = Path(__file__).resolve().parents[1]
PAGES = 40
NEW_TOKENS = 128
RESULTS = ROOT / "benchmarks" / "results"
# Row name -> (engine, how the folder reads documents: a render mode, or "text").
ROWS = {"llamacpp-Q4_K_M small": ("llamacpp", "small"), "llamacpp-Q4_K_M base": ("llamacpp", "base"),
        "llamacpp-Q4_K_M text tokens": ("llamacpp", "text"), "torch-auto small": ("torch", "small")}


def document_text(pages: int, mode: str) -> str:
    """Bundled abstracts joined until they render to `pages` pages in `mode` at the default font."""
    from config import RenderConfig
    from data.dataset_loader import BUNDLED_DIR
    from data.text_to_image import TextToImageConverter

    converter = TextToImageConverter(RenderConfig(mode=mode))
    abstracts = [" ".join(json.loads(line)["source"]) for line in open(BUNDLED_DIR / "train.jsonl", encoding="utf-8")]
    text = ""
    for abstract in abstracts:
        text = f"{text}\n\n{abstract}" if text else abstract
        if len(converter.render(text).pages) >= pages:
            return text
    raise RuntimeError(f"the bundled abstracts render to fewer than {pages} pages")


def reading_folder(source: Path, reads: str, scratch: Path) -> Path:
    """`source` (a model folder) reading documents as `reads` says: links to its files, with its own processor and
    render settings."""
    from config import GenerationSettings, RenderConfig, save_run_settings
    from model.checkpoint.source import resolve_model_source
    from model.processing import EXPORTED_PROCESSOR_CONFIG_NAME, PROCESSOR_CONFIG_NAME, DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    folder = scratch / f"reads-{reads}"
    folder.mkdir()
    mine = {PROCESSOR_CONFIG_NAME, EXPORTED_PROCESSOR_CONFIG_NAME, "render_config.json", "generation_settings.json"}
    for item in source.iterdir():
        if item.name not in mine:
            (folder / item.name).symlink_to(item.resolve())
    mode = "small" if reads == "text" else reads
    pages = resolve_model_source(str(source)).backbone.page_processor(mode)
    processor = DeepSeekOCRProcessor(load_tokenizer(str(source)), pages,
                                     input_mode="text" if reads == "text" else "pixels")
    exported = (source / EXPORTED_PROCESSOR_CONFIG_NAME).is_file()
    processor.save_pretrained(folder, EXPORTED_PROCESSOR_CONFIG_NAME if exported else PROCESSOR_CONFIG_NAME)
    if exported:  # the official processor_config.json stays the export's own
        (folder / PROCESSOR_CONFIG_NAME).symlink_to((source / PROCESSOR_CONFIG_NAME).resolve())
    save_run_settings(folder, RenderConfig(mode=mode), GenerationSettings(max_new_tokens=NEW_TOKENS))
    return folder


class StageClock:
    """Seconds spent in page encoding and in each generate call of the backend, as they happen."""

    def __init__(self, summarizer):
        self.encode = 0.0
        self.calls: list[tuple[int, float, float]] = []  # (documents, seconds, of which encoding)
        backend, generate = summarizer.backend, summarizer.backend.generate
        from model import backbones

        encoder = backbones.of_model(backend.model).encoder(backend.model)
        started = []
        encoder.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

        def encoded(*_):
            self.encode += time.perf_counter() - started.pop()

        encoder.register_forward_hook(encoded)

        def timed_generate(documents, kwargs):
            began, encoded = time.perf_counter(), self.encode
            try:  # every summary forced to its length: the worst case, the same on every row
                return generate(documents, {**kwargs, "min_new_tokens": kwargs["max_new_tokens"]})
            finally:
                self.calls.append((len(documents), time.perf_counter() - began, self.encode - encoded))

        backend.generate = timed_generate


def measure(name: str, places: dict, quick: bool) -> dict:
    """One row, in this (child) process."""
    import torch

    torch.set_num_threads(THREADS)
    from config import LoadSettings
    from inference.summarizer import DeepSeekSummarizer

    engine, reads = ROWS[name]
    with tempfile.TemporaryDirectory() as scratch:
        folder = reading_folder(places["q4_k_m"] if engine == "llamacpp" else places["project"], reads, Path(scratch))
        summarizer = DeepSeekSummarizer.from_pretrained(folder, LoadSettings(device="cpu", engine=engine))
        text = document_text(PAGES, "small" if reads == "text" else reads)
        clock = StageClock(summarizer)
        began = time.perf_counter()
        document = summarizer.prepare_text(text)
        rendered = time.perf_counter() - began
        result = summarizer.summarize_documents([document], summarizer.generation_settings())[0]
        total = time.perf_counter() - began
    first, later, counted = 0.0, 0.0, 0  # the first round's calls hold the document's windows
    for documents, seconds, encoded in clock.calls:
        if counted < result.windows:
            first += seconds - encoded
        else:
            later += seconds - encoded
        counted += documents
    stages = {"render": rendered, "encode": clock.encode, "decoder, first round": first, "decoder, later rounds": later}
    row = {"row": name, "pages": result.pages, "text_tokens": result.text_tokens, "strategy": result.strategy,
           "windows": result.windows, "levels": result.levels, "longest_prompt": result.prompt_tokens,
           "end_to_end_s": round(total, 1)}
    row.update({f"{stage}_s": round(seconds, 1) for stage, seconds in stages.items()})
    row.update({f"{stage} share": f"{seconds / total:.0%}" for stage, seconds in stages.items()})
    encoded_pages = result.pages * (2 if result.levels > 1 else 1)  # later rounds read rendered summaries too
    row["pages_encoded_per_s"] = round(encoded_pages / clock.encode, 2) if clock.encode and reads != "text" else None
    row["peak_rss_gb"] = round(peak_rss() / 1e9, 2)
    return row


def child(name: str, workdir: Path, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "row.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
        command = [sys.executable, "-m", "benchmarks.bench_long_document", "--child", name, "--result", str(result),
                   "--workdir", str(workdir), *(["--quick"] if quick else [])]
        status = subprocess.run(command, cwd=ROOT, env=env).returncode
        if not result.is_file():
            return {"row": name, "error": f"child exited with status {status}"}
        return json.loads(result.read_text(encoding="utf-8"))


def run(quick: bool, workdir: Optional[Path] = None, rows: Optional[list[str]] = None) -> list[dict]:
    from data.jsonl import write_json_atomic, write_text_atomic

    workdir, rows = workdir or default_workdir(quick), rows or list(ROWS)
    ensure_artifacts(workdir, quick)
    results = []
    for name in rows:
        log(f"long document: {name}")
        results.append(child(name, workdir, quick))
        log(f"{name}: {results[-1]}")
    if not quick:
        RESULTS.mkdir(exist_ok=True)
        write_json_atomic(RESULTS / "long_document.json", {"threads": THREADS, "pages": PAGES,
                                                           "new_tokens": NEW_TOKENS, "rows": results})
        write_text_atomic(RESULTS / "long_document.md", f"{__doc__.split(chr(10))[0]}\n\n{table(results)}\n")
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = Parser(prog="python -m benchmarks.bench_long_document", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-random instead of the real-size model")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {', '.join(ROWS)})")
    parser.add_argument("--workdir", help="the cpu-serving artifacts' folder (default: bench_cpu_serving's)")
    parser.add_argument("--child", help="internal: measure one row in this process")
    parser.add_argument("--result", help="internal: where the child writes its row")

    def command(args) -> None:
        if args.child:
            from benchmarks.bench_cpu_serving import layout
            from data.jsonl import write_json_atomic

            write_json_atomic(args.result, measure(args.child, layout(Path(args.workdir)), args.quick))
            return
        unknown = [row for row in args.rows.split(",") if row not in ROWS]
        if unknown:
            parser.error(f"unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
        print(table(run(args.quick, Path(args.workdir) if args.workdir else None, args.rows.split(","))))

    return run_command(parser, command, argv)


if __name__ == "__main__":
    sys.exit(main())
