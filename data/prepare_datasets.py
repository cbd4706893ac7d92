"""Prepare a summarization dataset: train/val/test JSONL files and, optionally, rendered page images.

    python -m data.prepare_datasets ccdv/cnn_dailymail --subset 3.0.0 --generate-images
    python -m data.prepare_datasets bundled --max-samples 3 --generate-images --mode tiny

Every output is written under a temporary name and renamed into place, so an interrupted run leaves no half
file; re-running the same command resumes (page images already complete are kept) and ends with the same bytes
as a run that was never interrupted. The split files, render_config.json and prepare_report.json describe the
page images; they are removed before any page they may point at is rendered anew (other render settings, another
text under the same id) and written again at the end, the report last, so a killed run never leaves a split file
pointing at pages of two settings or texts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from config import RenderConfig, TrainingConfig, first_line, from_dict, page_geometry, save_json, to_dict
from config.cli import Parser, add_settings_arguments, run_command, settings_from_args
from config.jobs import PrepareJob
from config.modes import DECODER_CONTEXT
from data.dataset_loader import SPLITS, DatasetLoader, file_stem
from data.jsonl import AtomicJsonlWriter, write_json_atomic
from data.tokens import count_text_tokens, prompt_positions

IMAGES_DIR = "images"
RENDER_CONFIG = "render_config.json"
REPORT = "prepare_report.json"
_converter = None  # one renderer per worker process, built once by _init_worker


def _init_worker(config: dict[str, Any], backbone: str) -> None:
    global _converter
    from data.text_to_image import TextToImageConverter

    _converter = TextToImageConverter(from_dict(RenderConfig, config), backbone=backbone)


def _config_fingerprint(config: RenderConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:16]


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _render_record(task: tuple[str, str, str, str, str]) -> tuple[str, Any]:
    """Render one record's pages (in a worker): ("rendered" | "reused", {"images", "render"}) or ("failed", why).

    A sidecar `<stem>.json`, written after all of its pages, marks a record complete: a re-run that finds it
    (made with the same render settings and text, with every page present) reuses the pages instead of rendering
    again, their vision tokens counted for this run's backbone. Pages are overwritten in place, so before that the
    sidecar goes (a kill midway must not leave it vouching for a mix of old and new pages), and so does the index
    of the run that made them (`_drop_index`).
    """
    from data.text_to_image import RenderError

    out_dir, rel_dir, stem, text, fingerprint = task
    sidecar = Path(out_dir, rel_dir, f"{stem}.json")
    if sidecar.exists():
        done = json.loads(sidecar.read_text(encoding="utf-8"))
        if done.get("config") == fingerprint and done.get("text") == _text_digest(text) \
                and all(Path(out_dir, p).is_file() for p in done["images"]):
            return "reused", {"images": done["images"], "render": _converter.recount(done["render"])}
        sidecar.unlink()
        _drop_index(Path(out_dir))
    try:
        document = _converter.render(text)
    except RenderError as err:
        return "failed", first_line(err)
    paths = _converter.save_pages(document, Path(out_dir, rel_dir), stem)
    result = {"images": [Path(p).relative_to(out_dir).as_posix() for p in paths], "render": document.stats()}
    write_json_atomic(sidecar, {"config": fingerprint, "text": _text_digest(text), **result})
    return "rendered", result


def _drop_index(out: Path) -> None:
    """Remove what describes the folder's pages (the split files, the render settings, the report, in the
    reverse of the order they are written): a previous run's, before its pages change, or this run's
    predecessor's, before this run's are renamed in, so a kill leaves files missing, never stale."""
    for name in [REPORT, RENDER_CONFIG, *(f"{split}.jsonl" for split in SPLITS)]:
        (out / name).unlink(missing_ok=True)


def _ordered_map(fn: Callable, items: Iterable[tuple[Any, Any]], workers: int, config: RenderConfig,
                 backbone: str) -> Iterator[tuple[Any, Any]]:
    """(key, fn(task)) for each (key, task) in input order; at most a few tasks per worker are in flight,
    so memory stays flat however long the stream is."""
    if workers == 1:
        _init_worker(to_dict(config), backbone)
        yield from ((key, fn(task)) for key, task in items)
        return
    # "spawn": the parent may hold pyarrow/datasets threads, which a forked child must not inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(to_dict(config), backbone)) as pool:
        pending: deque = deque()
        for key, task in items:
            pending.append((key, pool.submit(fn, task)))
            if len(pending) >= 4 * workers:
                key0, future = pending.popleft()
                yield key0, future.result()
        while pending:
            key0, future = pending.popleft()
            yield key0, future.result()


class ContextCount:
    """Counts, per split, the records whose training sequence would be longer than the decoder's context
    (`config.modes.DECODER_CONTEXT`, both backbones'): BOS, the pages' placeholders as the backbone lays them out,
    the instruction and the summary with its EOS, at the default training settings (TrainingConfig's instruction
    and summary length). Records are only counted, never dropped: the context is that of the model trained on them, known only to training, which leaves such
    records out and says how many (training/context.py)."""

    def __init__(self, render: RenderConfig, backbone: str):
        defaults = TrainingConfig()
        geometry = render.geometry
        self.render, self.backbone = render, backbone
        self.max_length = defaults.max_length
        self.fixed = prompt_positions(defaults.instruction)
        # Rendered pages all have the mode's page size, so each takes the same positions.
        self.page = page_geometry(backbone).positions(render.mode, geometry.page_width, geometry.page_height)
        self.over: Counter[str] = Counter()
        self._converter = None

    def _pages(self, record: dict[str, Any]) -> Optional[int]:
        """The record's pages: as rendered, or as they would be (laid out, not drawn); None if it cannot render."""
        if "render" in record:
            return record["render"]["pages"]
        from data.text_to_image import RenderError, TextToImageConverter

        self._converter = self._converter or TextToImageConverter(self.render, backbone=self.backbone)
        try:
            return self._converter.count_pages(record["text"])
        except RenderError:  # training would refuse it in the same words; there is no sequence to count
            return None

    def positions(self, record: dict[str, Any]) -> Optional[int]:
        pages = self._pages(record)
        if pages is None:
            return None
        summary = min(count_text_tokens(record["summary"].strip()) + 1, self.max_length)  # cut as training cuts it
        return self.fixed + pages * self.page + summary

    def add(self, split: str, record: dict[str, Any]) -> None:
        positions = self.positions(record)
        self.over[split] += positions is not None and positions > DECODER_CONTEXT

    def describe(self) -> dict[str, int]:
        return {"positions": DECODER_CONTEXT, "max_length": self.max_length, "backbone": self.backbone}


@dataclass
class PrepareResult:
    output_dir: str
    written: dict[str, int]  # records written per split (train, val, test)
    report: dict[str, Any]  # what prepare_report.json holds


def prepare(job: PrepareJob, *, progress: bool = True) -> PrepareResult:
    """Write `<output_dir>/{train,val,test}.jsonl` (+ images, render_config.json, prepare_report.json).

    Raises DatasetError / ConfigError on bad input, before anything is written.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    workers = job.workers or os.cpu_count() or 1
    loader = DatasetLoader(job.source, subset=job.subset, text_field=job.text_field,
                           summary_field=job.summary_field, max_samples=job.max_samples, seed=job.seed,
                           token=os.environ.get("HF_TOKEN"))
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    fingerprint = _config_fingerprint(job.render)
    render_failed: Counter[str] = Counter()
    image_counts: Counter[str] = Counter()
    context = ContextCount(job.render, job.backbone)

    def tasks() -> Iterator[tuple[tuple[str, dict], tuple[str, str, str, str, str]]]:
        for split, record in loader:
            yield (split, record), (str(out), f"{IMAGES_DIR}/{split}", file_stem(record["id"]), record["text"],
                                    fingerprint)

    def results() -> Iterator[tuple[str, Optional[dict]]]:
        if not job.generate_images:
            yield from ((split, record) for (split, record), _ in tasks())
            return
        for (split, record), (status, payload) in _ordered_map(_render_record, tasks(), workers, job.render,
                                                                   job.backbone):
            image_counts[status] += 1
            if status == "failed":
                render_failed[split] += 1
                yield split, None
            else:
                yield split, {**record, **payload}

    total = 3 * job.max_samples if job.max_samples else None
    writers = {split: AtomicJsonlWriter(out / f"{split}.jsonl") for split in SPLITS}
    try:
        with tqdm(total=total, unit="rec", desc="preparing", disable=not progress, file=sys.stderr) as bar:
            for split, record in results():
                if record is not None:
                    writers[split].write(record)
                    context.add(split, record)
                bar.update()
        _drop_index(out)  # the previous run's files go first: a kill between two renames mixes no two runs
        for writer in writers.values():
            writer.commit()
        save_json(job.render, out / RENDER_CONFIG)
    finally:
        for writer in writers.values():
            writer.__exit__(None, None, None)
    elapsed = time.perf_counter() - started
    written = sum(w.count for w in writers.values())
    report = {
        "source": job.source,
        "output_dir": str(out),
        "splits": {split: {"written": writers[split].count, "skipped": _skipped(loader, render_failed, split),
                           "over_context": context.over[split]} for split in SPLITS},
        "context": context.describe(),
        "images": job.generate_images,
        # Timing and resume counts differ from run to run; everything above is reproducible.
        "throughput": {"elapsed_s": round(elapsed, 3), "records_per_s": round(written / elapsed, 2),
                       "workers": workers if job.generate_images else 0,
                       "rendered": image_counts["rendered"], "reused": image_counts["reused"]},
    }
    write_json_atomic(out / REPORT, report)  # last: a folder with a report is complete
    return PrepareResult(str(out), {split: writers[split].count for split in SPLITS}, report)


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files a killed run left behind (ours and save_pages' are all hidden `.*.tmp`)."""
    for folder in [out, *sorted(p for p in (out / IMAGES_DIR).glob("*") if p.is_dir())]:
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _skipped(loader: DatasetLoader, render_failed: Counter, split: str) -> dict[str, int]:
    reasons = {reason: n for (s, reason), n in sorted(loader.skipped.items()) if s == split}
    if render_failed[split]:
        reasons["render error"] = render_failed[split]
    return reasons


def format_report(report: dict[str, Any]) -> str:
    lines = [f"Prepared {report['source']} -> {report['output_dir']}"]
    for split, counts in report["splits"].items():
        skipped = ", ".join(f"{n} {reason}" for reason, n in counts["skipped"].items()) or "none"
        lines.append(f"  {split + '.jsonl':<11} {counts['written']:>7} records   skipped: {skipped}   "
                     f"longer than the context: {counts['over_context']}")
    over, context = sum(counts["over_context"] for counts in report["splits"].values()), report["context"]
    if over:
        lines.append(f"  {over} records (kept) take more than the {context['positions']} positions of the decoder "
                     f"(pages as {context['backbone']} reads them) with a summary of up to {context['max_length']} "
                     "tokens: training leaves them out")
    speed = report["throughput"]
    lines.append(f"  {speed['records_per_s']} records/s in {speed['elapsed_s']} s")
    if report["images"]:
        lines.append(f"  page images under {Path(report['output_dir'], IMAGES_DIR)} "
                     f"({speed['rendered']} rendered, {speed['reused']} reused, {speed['workers']} workers)")
    return "\n".join(lines)


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m data.prepare_datasets",
        description="Prepare a summarization dataset as train/val/test JSONL files, optionally with page images. "
                    "Splits missing from the source are carved out of train by a seeded hash of each record id.")
    add_settings_arguments(parser, PrepareJob)
    return parser


def run(args: argparse.Namespace) -> None:
    # Streaming `datasets` imports torch (seconds) only to share a counter with DataLoader workers; this
    # command never uses torch, so it opts out before `datasets` is first imported.
    os.environ.setdefault("USE_TORCH", "0")
    print(format_report(prepare(settings_from_args(build_parser(), PrepareJob, args)).report))


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
