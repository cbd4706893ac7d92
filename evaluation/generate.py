"""Batch generation over a prepared JSONL: one prediction line per record, resumable.

    python -m evaluation.generate prepared_data/test.jsonl --model ./deepseek-summarizer --output predictions.jsonl

Each output line holds `id`, `prediction` and the record's figures (pages, vision tokens, text tokens, generated
tokens, seconds). Lines are appended as batches finish; a re-run skips the ids already written, and a line cut
short by a kill is dropped before appending. The generation settings are recorded beside the output
(`<output>.settings.json`); resuming with other settings is refused, so one file never mixes two settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from config import EXPERTS_IMPLEMENTATIONS, ConfigError, GenerationSettings
from data.jsonl import JsonlError, dumps_record, iter_jsonl, write_json_atomic


class GenerateError(Exception):
    """A problem with the inputs or the output file, reported as one line."""


def settings_path(output: Path) -> Path:
    return output.with_name(output.name + ".settings.json")


def completed_ids(output: Path) -> set[str]:
    """Ids already in `output`; a last line without its newline (a kill mid-write) is cut off first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(output, "r+b") as handle:
            handle.truncate(keep)
    done = set()
    for number, line in enumerate(data[:keep].decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise GenerateError(f"{output}:{number} is not a prediction line; move the file away or "
                                    f"use --overwrite") from None
    return done


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

    if use_images and record.get("images") and summarizer.model_type == "deepseek-ocr":
        pages = [load_image(str(base / path)) for path in record["images"]]
        return Document(pages, record.get("text"), (record.get("render") or {}).get("text_tokens"))
    return summarizer.prepare_text(record["text"])


def generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data.tokens import count_text_tokens
    from inference.inputs import InputError
    from inference.summarizer import DeepSeekSummarizer

    data_file, output = Path(args.data_file), Path(args.output)
    if not data_file.is_file():
        raise GenerateError(f"data file not found: {data_file}")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                  length_penalty=args.length_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                                  temperature=args.temperature, batch_size=args.batch_size, compile=args.compile)
    recorded = {"model": str(args.model), "data_file": str(data_file), "generation": vars(settings),
                "use_images": not args.render_text}
    if args.overwrite:
        output.unlink(missing_ok=True)
    elif output.exists() and settings_path(output).exists():
        previous = json.loads(settings_path(output).read_text(encoding="utf-8"))
        if previous != recorded:
            raise GenerateError(f"{output} was generated with other settings ({settings_path(output).name}); "
                                f"use --overwrite or another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(output)
    records = [r for r in _records(data_file, args.max_samples) if str(r["id"]) not in done]
    write_json_atomic(settings_path(output), recorded)
    if not records:
        print(f"[generate] nothing to do: all {len(done)} records of {data_file} are in {output}")
        return 0

    summarizer = DeepSeekSummarizer.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                    experts_implementation=args.experts_implementation)
    print(f"[generate] {len(records)} records ({len(done)} already done) with {args.model} on {summarizer.device}")
    failed = 0
    with open(output, "a", encoding="utf-8") as sink, tqdm(total=len(records), unit="doc", desc="generate") as bar:
        for start in range(0, len(records), settings.batch_size):
            batch, documents = [], []
            for record in records[start:start + settings.batch_size]:
                try:
                    documents.append(_document(summarizer, record, data_file.parent, not args.render_text))
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
            bar.update(len(records[start:start + settings.batch_size]))
    print(f"[generate] wrote {len(records) - failed} predictions to {output}"
          + (f"; {failed} records skipped (see above)" if failed else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.generate",
                                     description="Generate a summary for every record of a prepared JSONL file.")
    parser.add_argument("data_file", help="prepared JSONL (id, text, optional images)")
    parser.add_argument("--model", required=True, help="trained model folder, hub id, or 'tiny-random'")
    parser.add_argument("--output", required=True, help="predictions JSONL (appended to; resumable)")
    parser.add_argument("--overwrite", action="store_true", help="start the output file afresh")
    parser.add_argument("--max-samples", type=int, help="only the first N records")
    parser.add_argument("--render-text", action="store_true",
                        help="render each record's text instead of reading its prepared images")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--dtype", default="auto", help="bfloat16, float16, float32 or auto (default)")
    gen = parser.add_argument_group("generation")
    defaults = GenerationSettings()
    gen.add_argument("--batch-size", type=int, default=defaults.batch_size)
    gen.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    gen.add_argument("--num-beams", type=int, default=defaults.num_beams)
    gen.add_argument("--length-penalty", type=float, default=defaults.length_penalty)
    gen.add_argument("--no-repeat-ngram-size", type=int, default=defaults.no_repeat_ngram_size)
    gen.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy (default)")
    gen.add_argument("--compile", action="store_true",
                     help="fast decode path: static KV cache + torch.compile (default: off)")
    parser.add_argument("--experts-implementation", choices=EXPERTS_IMPLEMENTATIONS,
                        help="MoE experts kernels (default: grouped_mm where it dispatches, else eager)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        print("error: --max-samples must be at least 1", file=sys.stderr)
        return 2
    try:
        return generate(args)
    except (GenerateError, ConfigError, JsonlError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[generate] interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
