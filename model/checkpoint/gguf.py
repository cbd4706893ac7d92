"""GGUF export: the decoder (and, at real size, the vision projector) in llama.cpp's format, which llama.cpp and so
Ollama load, beside this project's official-layout export.

    python -m model.export --model ./deepseek-summarizer --output ./summarizer-gguf --format gguf --quant q4_k_m

Written by llama.cpp's own tools, not by a writer of ours: its converter (`convert_hf_to_gguf.py`, which knows
DeepSeek-OCR as the `deepseek2-ocr` architecture and its `DEEPSEEKOCR` projector, and reads the official layout
that `model.export` writes) and its quantizer (`llama_model_quantize` through llama-cpp-python). Both come with
`bash setup.sh --llamacpp` at the version of requirements-llamacpp.txt, so the files match the llama.cpp that
reads them. The output folder holds:

- the official layout (safetensors, config, tokenizer, this project's settings), which the torch engine and
  this project's DeepEncoder read;
- `gguf/model-<QUANT>.gguf`, the decoder, and `gguf/mmproj-F16.gguf`, the vision projector for llama.cpp's own
  pipeline (its converter maps SAM's neck by block index, so a model needs at least four SAM blocks: the tiny
  presets get no mmproj file).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

from config import UserError

GGUF_DIR = "gguf"
Quant = Literal["f32", "f16", "q8_0", "q4_k_m"]
# The converter writes f32, f16 and q8_0 itself; k-quants come from llama.cpp's quantizer on the f16 file.
CONVERTER_TYPES = {"f32": "f32", "f16": "f16", "q8_0": "q8_0", "q4_k_m": "f16"}
QUANTIZER_FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


class GgufError(UserError, ValueError):
    """A GGUF export that cannot be made as asked; one line for the user."""


def converter_dir() -> Path:
    """llama.cpp's converter: $LLAMA_CPP_CONVERTER, else where setup.sh --llamacpp unpacks it in the environment."""
    return Path(os.environ.get("LLAMA_CPP_CONVERTER") or Path(sys.prefix) / "share" / "llama-cpp-converter")


def check_gguf_tools(quant: str) -> None:
    """Before anything loads: a known quantization and the llama.cpp tools it needs."""
    if quant not in CONVERTER_TYPES:
        raise GgufError(f"unknown --quant {quant!r}; choose {', '.join(CONVERTER_TYPES)}")
    if not (converter_dir() / "convert_hf_to_gguf.py").is_file():
        raise GgufError(f"GGUF export needs llama.cpp's converter, not found in {converter_dir()}: run "
                        "`bash setup.sh --llamacpp` (or set LLAMA_CPP_CONVERTER to a llama.cpp checkout)")
    if quant in QUANTIZER_FTYPES:
        import_llama_cpp(f"--quant {quant} needs llama.cpp's quantizer")


def import_llama_cpp(needed_for: str = "the llamacpp engine needs llama.cpp"):
    """llama-cpp-python, reporting only llama.cpp's errors (it logs every tensor it loads or quantizes)."""
    import logging

    try:
        import llama_cpp
    except ImportError:
        raise GgufError(f"{needed_for} (llama-cpp-python), which is not installed: run "
                        "`bash setup.sh --llamacpp`") from None
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def gguf_files(folder: Path) -> list[Path]:
    return sorted((Path(folder) / GGUF_DIR).glob("*.gguf"))


def decoder_gguf(folder: Path) -> Path:
    """The decoder file of an export folder: its one `gguf/model-*.gguf`; with several, the user names one."""
    found = [path for path in gguf_files(folder) if path.name.startswith("model-")]
    if not found:
        raise GgufError(f"{folder} has no decoder GGUF files in {GGUF_DIR}/: export one with `python -m "
                        "model.export --format gguf`, or name a file with --gguf (GGUF for the API server)")
    if len(found) > 1:
        raise GgufError(f"{folder} has {len(found)} decoder GGUF files in {GGUF_DIR}/: pass --gguf FILE (GGUF=FILE "
                        f"for the API server) naming one of {', '.join(map(str, found))}")
    return found[0]


def _run_tool(command: list[str], failure: str) -> None:
    """One of llama.cpp's tools in a child process; `failure` and its last error line are the GgufError. Whatever
    ends the export meanwhile (Ctrl-C, SIGTERM, an error) kills the child and waits for its end, so nothing writes
    into the folder the export then removes (subprocess.run would send the kill but, on Ctrl-C, not wait)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            _, stderr = process.communicate()
        except BaseException:
            process.kill()
            process.wait()
            raise
    if process.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()] or ["no message"]
        raise GgufError(f"{failure}: {lines[-1]}")


def _convert(official: Path, outfile: Path, outtype: str, mmproj: bool = False) -> None:
    command = [sys.executable, str(converter_dir() / "convert_hf_to_gguf.py"), str(official), "--outtype", outtype,
               "--outfile", str(outfile), *(["--mmproj"] if mmproj else [])]
    _run_tool(command, f"llama.cpp's converter failed on {official}")


# llama.cpp's quantizer, run in a child process as the converter is: a signal ends it at once, where a call into
# llama.cpp from this process would hold the signal (and so the export's cleanup) until the whole model is done.
_QUANTIZE = """
import os, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, sys.argv[3])
params.nthread = os.cpu_count() or 1
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def _quantize(source: Path, target: Path, quant: str) -> None:
    _run_tool([sys.executable, "-c", _QUANTIZE, str(source), str(target), QUANTIZER_FTYPES[quant]],
              f"llama.cpp's quantizer failed to write {quant} from {source}")


def write_gguf(official: Path, quant: str, with_mmproj: bool) -> list[Path]:
    """The GGUF files of an official-layout folder, written into its `gguf/` folder."""
    folder = official / GGUF_DIR
    folder.mkdir()
    outtype = CONVERTER_TYPES[quant]
    decoder = folder / f"model-{quant.upper()}.gguf"
    if quant in QUANTIZER_FTYPES:
        # Inside the export's temporary folder, so an export interrupted while quantizing removes it with the rest.
        staged = folder / f".model-{outtype.upper()}.gguf"
        _convert(official, staged, outtype)
        _quantize(staged, decoder, quant)
        staged.unlink()
    else:
        _convert(official, decoder, outtype)
    if with_mmproj:
        _convert(official, folder / "mmproj-F16.gguf", "f16", mmproj=True)
    return gguf_files(official)
