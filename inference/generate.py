"""Batch generation over a prepared JSONL: one prediction line per record, resumable. The stage function is
`generate(GenerateJob) -> GenerateResult`; the command (the reference README's `evaluation.generate`) wraps it:

    python -m evaluation.generate prepared_data/test.jsonl --model ./deepseek-summarizer --output predictions.jsonl

Each output line holds `id`, `prediction` and the record's figures (pages, vision tokens, text tokens, generated
tokens, seconds). Lines are appended as batches finish; a re-run skips the ids already written, and a line cut
short by a kill is dropped before appending. The generation settings are recorded beside the output
(`<output>.settings.json`); resuming with other settings is refused, so one file never mixes two settings.
Launched by torchrun or `accelerate launch`, the records are shared between the processes (inference/distributed.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NoReturn, Optional

from config import ConfigError, to_dict
from config.cli import USAGE_ERROR, Parser, add_settings_arguments, first_line, run_command, settings_from_args
from config.jobs import GenerateJob
from data.jsonl import JsonlError, dumps_record, iter_jsonl, write_json_atomic
from inference.distributed import Processes, gather_parts, merge_shares, part_path
from inference.predictions import GenerateError, completed_ids


def settings_path(output: Path) -> Path:
    return output.with_name(output.name + ".settings.json")


def _records(data_file: Path, max_samples: Optional[int]) -> Iterator[dict[str, Any]]:
    for count, record in enumerate(iter_jsonl(data_file)):
        if max_samples is not None and count >= max_samples:
            return
        if "id" not in record or not (record.get("text") or record.get("images")):
            raise GenerateError(f"{data_file}: record {count + 1} needs an 'id' and a 'text' (or 'images')")
        yield record


def _document(summarizer, record: dict[str, Any], base: Path, use_images: bool):
    """Prepared page images when the record has them (pages as training saw them), else the rendered text."""
    from inference.backends import Document
    from inference.inputs import load_image

    if use_images and record.get("images") and summarizer.backend.reads_images:
        pages = [load_image(str(base / path)) for path in record["images"]]
        return Document(pages, record.get("text"), (record.get("render") or {}).get("text_tokens"))
    return summarizer.prepare_text(record["text"])


@dataclass
class GenerateResult:
    output: Path
    generated: int  # records this process generated in this call (0 when all were done earlier)
    skipped: int  # records refused as input (e.g. longer than the page cap), counted, not fatal
    done_earlier: int  # records already in the output (or in parts of an interrupted run) before this call
    seconds: float


def generate(job: GenerateJob) -> GenerateResult:
    """A summary for every record of `job.data_file` into `job.output`, resumable, shared between the processes of
    a torchrun / accelerate launch."""
    return _generate(job, _checked_records(job))


def _checked_records(job: GenerateJob) -> list[dict[str, Any]]:
    """The records to summarize, once the inputs are checked: all of it before any process meets another, so a
    bad input stops every process alike."""
    data_file, output = Path(job.data_file), Path(job.output)
    if not data_file.is_file():
        raise GenerateError(f"data file not found: {data_file}")
    if not job.overwrite and output.exists() and settings_path(output).exists():
        previous = json.loads(settings_path(output).read_text(encoding="utf-8"))
        if previous != _recorded(job):
            raise GenerateError(f"{output} was generated with other settings ({settings_path(output).name}); "
                                f"use --overwrite or another --output")
    return list(_records(data_file, job.max_samples))


def _recorded(job: GenerateJob) -> dict[str, Any]:
    """What makes two runs' predictions comparable (kept beside the output)."""
    return {"model": job.model, "data_file": str(Path(job.data_file)), "generation": to_dict(job.generation),
            "use_images": not job.render_text}


def _generate(job: GenerateJob, all_records: list[dict[str, Any]]) -> GenerateResult:
    began = time.perf_counter()
    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    order = [str(record["id"]) for record in all_records]
    # Under torchrun / accelerate launch each process takes a share of the records and writes its own part.
    processes = Processes.from_env()
    gather_parts(output, order, processes, overwrite=job.overwrite)
    done = completed_ids(output)
    remaining = [record for record in all_records if str(record["id"]) not in done]
    records = processes.share(remaining)
    if processes.is_main:
        write_json_atomic(settings_path(output), _recorded(job))
        if not remaining:
            print(f"[generate] nothing to do: all {len(done)} records of {job.data_file} are in {output}")
    generated = skipped = 0
    if records:
        generated, skipped = _generate_records(job, records, processes, len(done))
    merge_shares(output, order, processes)
    return GenerateResult(output, generated, skipped, len(done), round(time.perf_counter() - began, 3))


def _generate_records(job: GenerateJob, records: list[dict], processes: Processes, done: int) -> tuple[int, int]:
    from tqdm import tqdm

    from data.tokens import count_text_tokens
    from inference.inputs import InputError
    from inference.summarizer import DeepSeekSummarizer

    load = dataclasses.replace(job.load, device=processes.device(job.load.device or "auto"))
    summarizer = DeepSeekSummarizer.from_pretrained(job.model, load)
    sink_path = Path(job.output) if processes.size == 1 else part_path(Path(job.output), processes)
    print(f"[generate] {len(records)} records ({done} already done) with {job.model} on {summarizer.device}")
    settings, generated, failed = job.generation, 0, 0
    with open(sink_path, "a", encoding="utf-8") as sink, tqdm(total=len(records), unit="doc", desc="generate") as bar:
        for start in range(0, len(records), settings.batch_size):
            batch, documents = [], []
            for record in records[start:start + settings.batch_size]:
                try:
                    documents.append(_document(summarizer, record, Path(job.data_file).parent, not job.render_text))
                    batch.append(record)
                except InputError as err:  # e.g. a document longer than the page cap: counted, not fatal
                    failed += 1
                    tqdm.write(f"[generate] skipped {record['id']}: {err}")
            results = summarizer.summarize_documents(documents, settings) if documents else []
            lines = [dumps_record({"id": record["id"], "prediction": result.summary, "pages": result.pages,
                                   "vision_tokens": result.vision_tokens, "text_tokens": result.text_tokens,
                                   "generated_tokens": count_text_tokens(result.summary) if result.summary else 0,
                                   "seconds": result.seconds})
                     for record, result in zip(batch, results)]
            sink.write("".join(lines))  # whole lines only; the file is flushed after every batch
            sink.flush()
            os.fsync(sink.fileno())
            generated += len(lines)
            bar.update(len(records[start:start + settings.batch_size]))
    print(f"[generate] wrote {generated} predictions to {sink_path}"
          + (f"; {failed} records skipped (see above)" if failed else ""))
    return generated, failed


def build_parser() -> Parser:
    parser = Parser(prog="python -m evaluation.generate",
                    description="Generate a summary for every record of a prepared JSONL file.")
    add_settings_arguments(parser, GenerateJob)
    return parser


def job_from_args(args: argparse.Namespace) -> GenerateJob:
    """The flags over the model folder's saved generation settings (checked before the slow model load)."""
    from model.checkpoint.source import resolve_model_source

    saved = resolve_model_source(getattr(args, "model")).saved_settings()[1]
    return settings_from_args(build_parser(), GenerateJob, args, generation=saved)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the inputs (flags, data, model name, output file, device): reported as one line."""
    from model.checkpoint.device import DeviceError
    from model.checkpoint.load import ModelLoadError
    from model.checkpoint.source import ModelSourceError

    return (ConfigError, GenerateError, JsonlError, ModelSourceError, ModelLoadError, DeviceError)


def _run(args: argparse.Namespace) -> int:
    processes = Processes.from_env()
    job = records = problem = None
    try:
        job = job_from_args(args)
        records = _checked_records(job)
    except user_errors() as err:
        if processes.size == 1:
            raise
        problem = f"error: {first_line(err)}"
    if processes.size > 1 and processes.any_problem(problem):
        return USAGE_ERROR
    _generate(job, records)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser, processes = build_parser(), Processes.from_env()
    if processes.size > 1:
        def error(message: str) -> NoReturn:  # the same flags in every process: the first one says what is wrong
            processes.any_problem(f"{parser.prog}: error: {message}")
            parser.exit(USAGE_ERROR)

        parser.error = error
    return run_command(parser, _run, argv, user_errors())


if __name__ == "__main__":
    sys.exit(main())
