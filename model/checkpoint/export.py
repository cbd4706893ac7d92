"""Export a model to its official layout (DeepSeek-OCR's or DeepSeek-OCR-2's, as its backbone says), the format
vLLM, SGLang, the official `infer()` code and the checkpoint converters read.

    python -m model.checkpoint.export --model ./deepseek-summarizer --output ./deepseek-summarizer-official

Official counterpart: the `deepseek-ai/DeepSeek-OCR` (or `-OCR-2`) hub folder. What is written:
- the weights under the official key names (the backbone's `official_state_dict`), in safetensors shards with
  `model.safetensors.index.json`, in bfloat16 (as the official checkpoint), float16 or float32;
- `config.json` in the official schema (the backbone's `official_config`);
- the tokenizer files and the official `processor_config.json` (DeepseekVLV2Processor fields);
- this project's settings, which no engine reads but `load_pretrained` and the summarizer do: the processor settings
  (`summarizer_processor_config.json`; a preset's or an official folder's are those of its render mode), render
  settings and generation settings.
A checkpoint holding unmerged LoRA adapters is merged first. The folder is assembled under a hidden temporary name
beside the output (`.<name>.export-tmp-<pid>`) and renamed into place, so a failed export leaves nothing behind:
an error, Ctrl-C or SIGTERM removes the temporary folder (and stops a running llama.cpp tool) before the command
ends, and what an export killed beyond any handler left (SIGKILL, a power cut) is removed by the next export into
the same output, once the process named in it is gone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from config import UserError, save_run_settings
from config.cli import Parser, run_command
from data.jsonl import write_json_atomic
from model import backbones
from model.checkpoint.convert import load_model, model_config
from model.checkpoint.device import PRECISIONS
from model.checkpoint.gguf import (
    CONVERTER_TYPES,
    check_gguf_tools,
    gguf_files,
    write_gguf,
)
from model.checkpoint.load import deepseek_ocr_processor
from model.checkpoint.lora import has_lora_keys, merge_lora_state_dict, saved_lora_scalings
from model.checkpoint.source import ModelSource, resolve_model_source
from model.checkpoint.staging import move_into_place, staged_folder
from model.configuration import TINY_PRESET
from model.official_layout import check_state_dict, read_safetensors_folder
from model.processing import EXPORTED_PROCESSOR_CONFIG_NAME, IGNORE_INDEX, PROCESSOR_CONFIG_NAME
from model.tokenizer import IMAGE_TOKEN, PAD_TOKEN

INDEX_FILE = "model.safetensors.index.json"
# The official processor_config.json (DeepseekVLV2Processor): engines hand these to their own processor (16-pixel
# SAM patches, downsampled 4x per side: config.modes.vision_tokens_per_view's count).
OFFICIAL_PROCESSOR_CONFIG = {
    "add_special_token": False, "candidate_resolutions": [[1024, 1024]], "downsample_ratio": 4,
    "ignore_id": IGNORE_INDEX, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "image_token": IMAGE_TOKEN, "mask_prompt": False, "normalize": True, "pad_token": PAD_TOKEN,
    "patch_size": 16, "processor_class": "DeepseekVLV2Processor", "sft_format": "deepseek",
}


class ExportError(UserError, ValueError):
    """A source or output that cannot be exported as asked; one line for the user."""


def _holds_unmerged_lora(folder: Path) -> bool:
    from safetensors import safe_open

    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            if has_lora_keys(handle.keys()):
                return True
    return False


def weight_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name (model/checkpoint/device.py's vocabulary)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown dtype {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def shard_bytes(size: int | str) -> int:
    """The largest shard in bytes: a number of bytes, or a size in huggingface_hub's spelling ("5GB", "500MB"),
    read by the parser its sharding applies."""
    from huggingface_hub.serialization._base import parse_size_to_int

    try:
        value = int(size) if isinstance(size, int) or str(size).strip().isdigit() else parse_size_to_int(size)
    except ValueError as err:
        raise ExportError(f"--max-shard-size {size!r}: {err}") from None
    if value <= 0:
        raise ExportError(f"--max-shard-size {size!r} must be a positive size, such as 5GB or 500MB")
    return value


def load_source(source: ModelSource, dtype: torch.dtype):
    """The model to export, LoRA merged: a preset, hub id, official folder, trained folder, or a checkpoint-N
    folder written mid-training (whose adapters are still separate)."""
    if source.kind == "project" and _holds_unmerged_lora(source.path):
        state = read_safetensors_folder(source.path)
        merged = merge_lora_state_dict(state, saved_lora_scalings(state, source.path))
        model = source.backbone.build_empty(model_config(source), dtype)
        check_state_dict(model, merged)
        model.load_state_dict({key: value.to(dtype) for key, value in merged.items()}, strict=True)
        return model.eval()
    return load_model(source, dtype=dtype)


def write_official_weights(model, folder: Path, dtype: torch.dtype = torch.bfloat16,
                           max_shard_size: int | str = "5GB") -> None:
    """The weights (safetensors shards + index) and the official config.json of `model`, into `folder`."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    backbone = backbones.of_model(model)
    official = {key: value.to(dtype) for key, value in backbone.official_state_dict(model).items()}
    split = split_torch_state_dict_into_shards(official, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        save_file({key: official[key].contiguous() for key in keys}, str(folder / filename),
                  metadata={"format": "pt"})
    # Written even for one shard: the official folder has an index, and loaders look for it.
    write_json_atomic(folder / INDEX_FILE, {"metadata": split.metadata, "weight_map": split.tensor_to_filename})
    # safetensors writes its files owner-only; a server running as another user (a container) must read them, so
    # they get the permissions the umask gives any other file, as the index just got.
    mode = (folder / INDEX_FILE).stat().st_mode & 0o777
    for filename in split.filename_to_tensors:
        (folder / filename).chmod(mode)
    write_json_atomic(folder / "config.json",
                      backbone.official_config(model.config, str(dtype).removeprefix("torch.")))


def _write_settings(source: ModelSource, folder: Path) -> None:
    """Tokenizer, official processor config, and this project's processor / render / generation settings."""
    render, generation = source.saved_settings()
    # The processor saved with the source, or for one without (a preset, an official folder) the processor of its
    # render mode, which the loader would build; either way with the tokenizer files.
    deepseek_ocr_processor(source, render.mode).save_pretrained(folder, EXPORTED_PROCESSOR_CONFIG_NAME)
    # The official tokenizer class: engines pinned to transformers 4.x do not know v5's `TokenizersBackend`, and
    # both versions read the same tokenizer.json through it (BOS added, as the official tokenizer does).
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(tokenizer_class="LlamaTokenizerFast", add_bos_token=True, add_eos_token=False)
    write_json_atomic(folder / "tokenizer_config.json", config)
    write_json_atomic(folder / PROCESSOR_CONFIG_NAME, OFFICIAL_PROCESSOR_CONFIG)
    save_run_settings(folder, render, generation)


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder unless `overwrite`."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"output path {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"output folder {output} is not empty; pass --overwrite to replace it")


def export_model(name: str, output: str | Path, dtype: str = "bfloat16", overwrite: bool = False,
                 max_shard_size: int | str = "5GB", gguf: Optional[str] = None) -> Path:
    """Write the model `name` in the official layout to `output` (see the module docstring), with its GGUF files
    at quantization `gguf` when given (model/checkpoint/gguf.py); returns `output`. Every argument is checked
    before the model is resolved (a hub id fetched) or loaded."""
    torch_dtype, shard_size = weight_dtype(dtype), shard_bytes(max_shard_size)
    if gguf is not None:
        gguf = gguf.lower()  # the spelling of the file it names (model-Q8_0.gguf) works too
        check_gguf_tools(gguf)
    output = Path(output).expanduser()
    check_output(output, overwrite)
    source = resolve_model_source(name, weights=True)
    if not source.has_backbone:
        raise ExportError(f"{name} holds a seq2seq model: only DeepSeek-OCR has the official layout")
    model = load_source(source, torch_dtype)
    with staged_folder(output) as tmp:
        write_official_weights(model, tmp, torch_dtype, shard_size)
        _write_settings(source, tmp)
        if gguf is not None:
            official = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            write_gguf(tmp, gguf, with_mmproj=source.backbone.maps_projector(official))
        move_into_place(tmp, output)
    return output


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build_parser() -> Parser:
    parser = Parser(prog="python -m model.export",
                    description="Write a model in the official DeepSeek-OCR layout (for vLLM, SGLang, the official "
                                "code and checkpoint converters), and with --format gguf also as GGUF files (for "
                                "llama.cpp and Ollama).")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help=f"trained folder (LoRA or not), checkpoint-N folder, official folder, hub id or "
                             f"{TINY_PRESET!r}")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write (must be empty or new)")
    parser.add_argument("--dtype", default="bfloat16", help="precision of the weights: bf16/bfloat16 (default, as the "
                        "official checkpoint), fp16/float16 or fp32/float32")
    parser.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                        help="largest safetensors file: 5GB (default), 500MB... or a number of bytes")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--format", choices=["official", "gguf"],
                        help="official (default): the safetensors layout only; gguf (implied by --quant): also the "
                             "decoder (and vision projector) as GGUF files in <output>/gguf, by llama.cpp's "
                             "converter and quantizer")
    parser.add_argument("--quant", metavar="TYPE", help=f"GGUF type of the decoder: {', '.join(CONVERTER_TYPES)}, "
                        "in either case (Q8_0 as in the file name model-Q8_0.gguf); default f16; implies --format gguf")
    return parser


def gguf_quant(args: argparse.Namespace) -> Optional[str]:
    """The GGUF type the flags ask for, None for the official layout alone: --quant means GGUF files are wanted,
    so it implies --format gguf rather than being ignored without it."""
    if args.format == "official" and args.quant is not None:
        raise ExportError(f"--quant {args.quant} is a GGUF type, but --format official writes no GGUF files: "
                          "drop --quant, or use --format gguf")
    if args.format == "gguf" or args.quant is not None:
        return args.quant or "f16"
    return None


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    gguf = gguf_quant(args)
    output = export_model(args.model, args.output, args.dtype, args.overwrite, args.max_shard_size, gguf)
    print(f"exported {args.model} to {output} ({args.dtype}, {folder_size(output) / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s")
    for file in gguf_files(output):
        print(f"  {file.relative_to(output)}: {file.stat().st_size / 1e6:.1f} MB")


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
