"""The infer CLI: summarize text files, standard input, images or PDFs with a trained summarizer folder.

    python -m inference.infer --model_path ./deepseek-summarizer --input_file article.txt --max_length 128
    python -m inference.infer --model_path ./deepseek-summarizer --image_path document.png
    cat article.txt | python -m inference.infer --model_path ./deepseek-summarizer --json

Errors are one line on stderr and exit status 2, never a traceback.
`DeepSeekSummarizer` is importable from here too, as the README's module table says.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from config import GenerationSettings, LoadSettings
from config.cli import Parser, add_settings_arguments, apply_flags, run_command
from inference.inputs import DEFAULT_PDF_DPI, InputError, decode_text


def __getattr__(name: str):
    # Lazy, so `--help` and flag errors answer without importing torch.
    if name in ("DeepSeekSummarizer", "SummaryResult"):
        from inference import summarizer

        return getattr(summarizer, name)
    raise AttributeError(f"module 'inference.infer' has no attribute {name!r}")


def build_parser() -> Parser:
    parser = Parser(prog="python -m inference.infer", underscores=True, description="Summarize documents (text "
                    "rendered to pages, images, PDFs) with a trained summarizer. Generation starts from the model "
                    "folder's saved settings; the flags below override them.")
    parser.add_argument("--model_path", "--model", default=os.environ.get("MODEL_PATH"), metavar="ID_OR_PATH",
                        help="model folder, hub id or preset (default: $MODEL_PATH)")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--input_file", nargs="+", metavar="FILE", help="UTF-8 text file(s); '-' reads stdin")
    inputs.add_argument("--image_path", nargs="+", metavar="IMAGE", help="page image(s), one document each")
    inputs.add_argument("--pdf_path", nargs="+", metavar="PDF", help="PDF file(s), one document each")
    parser.add_argument("stdin", nargs="?", choices=["-"], help="'-': read the text from standard input")
    parser.add_argument("--dpi", type=int, default=DEFAULT_PDF_DPI,
                        help="PDF rasterisation resolution (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    add_settings_arguments(parser, LoadSettings, parser.add_argument_group("model loading"))
    add_settings_arguments(parser, GenerationSettings, parser.add_argument_group(
        "generation", "defaults: the model folder's saved settings, else the ones below"))
    return parser


def _read_text(name: str) -> str:
    if name == "-":
        return decode_text(sys.stdin.buffer.read())
    path = Path(name)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    return decode_text(path.read_bytes())


def _collect_inputs(args) -> tuple[str, list[str]]:
    """(kind, names): every input is checked to exist before the model is loaded."""
    if args.image_path or args.pdf_path:
        kind, names = ("image", args.image_path) if args.image_path else ("pdf", args.pdf_path)
        missing = [name for name in names if not Path(name).is_file()]
        if missing:
            raise InputError(f"{kind} file not found: {missing[0]}")
        return kind, names
    if args.input_file:
        return "text", args.input_file
    if args.stdin == "-" or not sys.stdin.isatty():
        return "text", ["-"]
    raise InputError("no input: pass --input_file, --image_path, --pdf_path, or pipe text into standard input")


def _print(results: list, names: list[str], as_json: bool) -> None:
    if as_json:
        rows = [{"input": name, **result.to_dict()} for name, result in zip(names, results)]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, ensure_ascii=False, indent=2))
        return
    for name, result in zip(names, results):
        if len(results) > 1:
            print(f"== {name} ==")
        print(result.summary)


def run(args) -> int:
    kind, names = _collect_inputs(args)
    if not args.model_path:
        raise InputError("no model: pass --model_path or set MODEL_PATH")
    # The folder's saved settings with the flags on top, checked before the slow model load.
    from model.checkpoint.source import resolve_model_source

    saved = resolve_model_source(args.model_path).saved_settings()[1]
    settings = apply_flags(build_parser(), saved, args)
    texts = [_read_text(name) for name in names] if kind == "text" else None

    from transformers.utils import logging as hf_logging

    from inference.summarizer import DeepSeekSummarizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load = apply_flags(build_parser(), LoadSettings(), args)
    summarizer = DeepSeekSummarizer.from_pretrained(args.model_path, load)
    if kind == "text":
        documents = [summarizer.prepare_text(text) for text in texts]
    elif kind == "image":
        documents = [summarizer.prepare_image(name) for name in names]
    else:
        documents = [summarizer.prepare_pdf(name, args.dpi) for name in names]
    _print(summarizer.summarize_documents(documents, settings), ["stdin" if n == "-" else n for n in names], args.json)
    return 0


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
