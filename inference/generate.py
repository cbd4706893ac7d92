"""Batch generation over a prepared JSONL: one prediction line per record, resumable. The stage function is
`generate(GenerateJob) -> GenerateResult`; the command (the reference README's `evaluation.generate`) wraps it:

    python -m evaluation.generate prepared_data/test.jsonl --model ./deepseek-summarizer --output predictions.jsonl

Each output line holds `id`, `prediction` and the record's figures (pages, vision tokens, text tokens, how it was
read within the context: strategy, windows, pages and tokens read; generated tokens, seconds). Lines are appended as batches finish; a re-run skips the ids already written, and a line cut
short by a kill is dropped before appending. What the predictions depend on (model, data, engine, GGUF file,
precision, generation settings) is recorded beside the output (`<output>.settings.json`) before any line is
written; resuming with any of it changed is refused, so one file never mixes two settings.
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

from config import RENDER_CONFIG_FILE, USER_ERRORS, LoadSettings, flat_items, to_dict
from config.cli import USAGE_ERROR, Parser, add_settings_arguments, error_message, run_command, settings_from_args
from config.jobs import GenerateJob
from data.jsonl import dumps_record, file_digest, iter_jsonl, write_json_atomic
from inference.distributed import Processes, discard_predictions, gather_parts, merge_shares, part_files, part_path
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
    data_file = Path(job.data_file)
    if not data_file.is_file():
        raise GenerateError(f"data file not found: {data_file}")
    recorded = _recorded(job)  # here, so a missing GGUF file or device also stops every process alike
    if not job.overwrite:
        _check_resumable(job, Path(job.output), recorded)
    return list(_records(data_file, job.max_samples))


def _check_resumable(job: GenerateJob, output: Path, recorded: dict[str, Any]) -> None:
    """Predictions already there (the output, or the parts of a killed multi-process run) are resumed only when
    they were made as this run would make them; otherwise one line naming the first difference. Only read here:
    every process checks, and the first one alone changes the files (`_generate`)."""
    if not any(_holds_lines(path) for path in (output, *part_files(output))):
        return  # nothing to resume: a settings file left beside nothing is replaced
    where = settings_path(output)
    if not where.exists():  # settings are recorded before any line is written: these lines came from elsewhere
        raise GenerateError(f"{output} holds predictions of unknown settings (no {where.name}); use --overwrite "
                            "or another --output")
    # A file written before the engine, GGUF and precision were recorded was made on torch with the default
    # precision: its missing keys read as such a run's, so it never passes for a llama.cpp run.
    default = dataclasses.replace(job, load=LoadSettings(device=job.load.device))
    previous = {**_recorded(default), **json.loads(where.read_text(encoding="utf-8"))}
    difference = _difference(previous, recorded)
    if difference:
        raise GenerateError(f"{output} was generated with {difference}; use --overwrite or another --output")


def _holds_lines(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:  # absent, or a part the first process has just merged
        return False


def _recorded(job: GenerateJob) -> dict[str, Any]:
    """What makes two runs' predictions comparable (kept beside the output): the model, the data, the engine, the
    GGUF decoder and the precision as they will actually be used, the generation settings. Not the device index
    nor the attention and experts kernels: these compute the same function (at rounding level), and a resume must
    be free to run on other GPUs or another number of them (the precision they give is recorded)."""
    from model.checkpoint.source import resolve_model_source

    source = resolve_model_source(job.model)
    return {"model": job.model, "data_file": str(Path(job.data_file)), "data": _data_identity(Path(job.data_file)),
            "engine": job.load.engine,
            "gguf": _gguf(job, source), **_precisions(job, source), "generation": to_dict(job.generation),
            "use_images": not job.render_text}


def _data_identity(data_file: Path) -> dict[str, Optional[str]]:
    """The data file's content and the render settings beside it: a file prepared again in place (another font,
    other records) under the same name is other data."""
    render = data_file.parent / RENDER_CONFIG_FILE
    return {"file": file_digest(data_file), "render": file_digest(render) if render.is_file() else None}


def _gguf(job: GenerateJob, source) -> Optional[str]:
    """The llamacpp engine's decoder file: --gguf, else the model folder's one model-*.gguf (the engine's own
    default, model/checkpoint/gguf.py); None on torch, or where the engine's loader will say why it cannot run."""
    from model.checkpoint.gguf import decoder_gguf

    if job.load.engine != "llamacpp":
        return None
    if job.load.gguf:
        return str(Path(job.load.gguf).resolve())
    if source.path is None or not source.has_backbone:
        return None
    return str(decoder_gguf(source.path).resolve())


def _precisions(job: GenerateJob, source) -> dict[str, str]:
    """The weights' dtypes the loader will resolve for this process's device, by the one precision rule
    (model/checkpoint/device.py): the model's, and for DeepSeek-OCR its page encoder's, which the rule may set
    apart. Resolved, not as asked: `auto` on one machine and `bf16` on another can be the same run, or not."""
    from model.checkpoint import device as rule

    device = rule.resolve_device(Processes.from_env().device(job.load.device or "auto"))
    # The rule warns when it falls back to float32; the loader gives that warning, once.
    quiet, rule.logger.disabled = rule.logger.disabled, True
    try:
        dtypes = {"precision": rule.resolve_precision(job.load.dtype, device)}
        if source.has_backbone:
            dtypes["encoder_precision"] = rule.resolve_encoder_precision(job.load.dtype, device)
    finally:
        rule.logger.disabled = quiet
    return {key: str(dtype).removeprefix("torch.") for key, dtype in dtypes.items()}


def _difference(previous: dict[str, Any], current: dict[str, Any]) -> Optional[str]:
    """The first recorded setting that differs, as "key old, not new" (a GGUF file by its name where the names
    differ), or None when the two runs are the same."""
    old, new = dict(flat_items(previous)), dict(flat_items(current))
    for key in [*new, *(key for key in old if key not in new)]:
        before, now = old.get(key), new.get(key)
        if before != now:
            if key == "gguf" and before and now and Path(before).name != Path(now).name:
                before, now = Path(before).name, Path(now).name
            return f"{key} {before}, not {now}"
    return None


def _generate(job: GenerateJob, all_records: list[dict[str, Any]]) -> GenerateResult:
    began = time.perf_counter()
    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    order = [str(record["id"]) for record in all_records]
    # Under torchrun / accelerate launch each process takes a share of the records and writes its own part.
    processes = Processes.from_env()
    if processes.is_main:
        if job.overwrite:  # first: a kill before the new settings are recorded leaves the old ones over old lines
            discard_predictions(output)
        # Before gather_parts' barrier, so no process writes a line the settings file does not describe.
        write_json_atomic(settings_path(output), _recorded(job))
    gather_parts(output, order, processes)
    done = completed_ids(output)
    remaining = [record for record in all_records if str(record["id"]) not in done]
    records = processes.share(remaining)
    if processes.is_main and not remaining:
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
                    document = _document(summarizer, record, Path(job.data_file).parent, not job.render_text)
                    summarizer.plan(document, settings)  # a document the settings cannot read is this one's error
                    documents.append(document)
                    batch.append(record)
                except InputError as err:  # e.g. a document longer than the page cap: counted, not fatal
                    failed += 1
                    tqdm.write(f"[generate] skipped {record['id']}: {err}")
            done_here, errors = _summarize(summarizer, batch, documents, settings)
            for record, err in errors:
                failed += 1
                tqdm.write(f"[generate] skipped {record['id']}: {err}")
            lines = [dumps_record({"id": record["id"], "prediction": result.summary, **result.figures(),
                                   "generated_tokens": count_text_tokens(result.summary) if result.summary else 0})
                     for record, result in done_here]
            sink.write("".join(lines))  # whole lines only; the file is flushed after every batch
            sink.flush()
            os.fsync(sink.fileno())
            generated += len(lines)
            bar.update(len(records[start:start + settings.batch_size]))
    print(f"[generate] wrote {generated} predictions to {sink_path}"
          + (f"; {failed} records skipped (see above)" if failed else ""))
    return generated, failed


def _summarize(summarizer, records: list[dict], documents: list, settings) -> tuple[list, list]:
    """([(record, result)], [(record, error)]) of a batch. A document can still turn out unreadable at a later level
    of a hierarchical reading (its window summaries too long to fit); then the batch is redone one document at a
    time, so that that document alone is skipped."""
    from inference.inputs import InputError

    if not documents:
        return [], []
    try:
        return list(zip(records, summarizer.summarize_documents(documents, settings))), []
    except InputError as err:
        if len(documents) == 1:
            return [], [(records[0], err)]
    done, errors = [], []
    for record, document in zip(records, documents):
        try:
            done.append((record, summarizer.summarize_documents([document], settings)[0]))
        except InputError as err:
            errors.append((record, err))
    return done, errors


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


def _run(args: argparse.Namespace) -> int:
    processes = Processes.from_env()
    job = records = problem = None
    try:
        job = job_from_args(args)
        records = _checked_records(job)
    except USER_ERRORS as err:
        if processes.size == 1:
            raise
        problem = error_message(build_parser(), args, err)
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
    return run_command(parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
