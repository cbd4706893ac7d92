"""CPU serving of the real-size model (3.34B parameters, seeded random weights, 2 threads): every way this project
serves a page on a CPU, and llama.cpp's own tools on the same GGUF files as the anchor, side by side in one run.

Paths, each in its own child process (one after the other, so one path's memory never adds to another's):
- torch float32, torch auto (float32 with the encoder in bfloat16 on a CPU with bf16 units), torch bfloat16 and
  torch bfloat16 compiled (static KV cache + torch.compile of the decode step), `DeepSeekSummarizer` on the folder
  training writes;
- the llamacpp engine at F16, Q8_0 and Q4_K_M: this project's DeepEncoder (torch, auto precision) and llama.cpp's
  decoder, on the folder `python -m model.export --format gguf` writes;
- llama.cpp's own tools on the same GGUF files (`--llama-cpp-bin`: `llama-bench` for batch-1 decoding,
  `llama-batched-bench` for batch 4, `llama-mtmd-cli` with the vision projector for a page), built from the
  llama.cpp that requirements-llamacpp.txt pins with setup.sh's CPU flags; its image layout is its own (a 1024
  global view, plus 640 tiles for a larger page), whatever the page's render mode.

Per path: page encode seconds (pixels to page embeddings) per render mode; the first token's seconds (encode,
prefill, one token); decoding tokens/s at batch 1 and 4, (N - 1) / (time for N tokens - time for 1) on one page;
one page summarized end to end (rendering a bundled text, then N tokens, forced with min_new_tokens); peak RSS
while loading and while serving; speed-ups over torch float32. N = 128 (8 with --quick).

--backbone deepseek-ocr-2 measures DeepSeek-OCR-2 the same way (its own --workdir; results in
cpu_serving_deepseek_ocr_2.md). The model is built once into --workdir (seeded, bfloat16): the project folder, its
export with the GGUF decoder at F16 (and the vision projector), and Q8_0 / Q4_K_M decoders, all by the project's
own export functions (llama.cpp's converter and quantizer): 24 GB of disk, 12 GB of memory, about 15 minutes of
two cores the first time. A full run then takes about 45 minutes; run it on an otherwise idle machine (llama.cpp's
threads wait for each other by spinning, and slow down many times over when other processes take the cores).
--quick uses the tiny-random preset instead: a smoke test of the whole benchmark in a couple of minutes.

    python -m benchmarks.bench_cpu_serving --llama-cpp-bin ~/llama.cpp/build/bin
    python -m benchmarks.bench_cpu_serving --quick --paths torch-float32,llamacpp-Q4_K_M
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from statistics import median
from typing import Optional

from benchmarks.cli import table
from config.cli import Parser

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
DEFAULT_BACKBONE = "deepseek-ocr"  # model.backbones.DEFAULT, named without importing torch
MODES = ("small", "base")  # the 640 and 1024 views
BATCH = 4
QUANTS = ("f16", "q8_0", "q4_k_m")
# Path name -> how the summarizer is loaded; dtype None is the load rule's auto (the encoder in bf16 on bf16 CPUs).
PATHS = {
    "torch-float32": dict(engine="torch", dtype="float32", compile=False),
    "torch-auto": dict(engine="torch", dtype=None, compile=False),
    "torch-bf16": dict(engine="torch", dtype="bf16", compile=False),
    "torch-bf16-compiled": dict(engine="torch", dtype="bf16", compile=True),
    **{f"llamacpp-{quant.upper()}": dict(engine="llamacpp", dtype=None, compile=False, quant=quant)
       for quant in QUANTS},
}
BASELINE = "torch-float32"
TOOLS = ("llama-bench", "llama-batched-bench", "llama-mtmd-cli")
GB = 1e9
SHARD = "1GB"  # safetensors copies a shard in memory while writing it: small shards keep the build under 10 GB


def log(message: str) -> None:
    print(f"[cpu-serving] {message}", file=sys.stderr, flush=True)


def sizes(quick: bool) -> dict:
    return {"new_tokens": 8, "encode_repeats": 1, "generate_repeats": 3} if quick else \
        {"new_tokens": 128, "encode_repeats": 3, "generate_repeats": 2}


def default_workdir(quick: bool, backbone: str = DEFAULT_BACKBONE) -> Path:
    name = ("tiny-random" if quick else "real-size") + ("" if backbone == DEFAULT_BACKBONE else f"-{backbone}")
    return Path.home() / ".cache" / "deepseek-ocr-summarizer" / "bench-cpu-serving" / name


def page_text() -> str:
    """A bundled document (a SciTLDR abstract): one page in every render mode measured here."""
    from data.dataset_loader import BUNDLED_DIR

    with open(BUNDLED_DIR / "test.jsonl", encoding="utf-8") as lines:
        return " ".join(json.loads(next(lines))["source"])


# ------------------------------------------------------------------------------------------------ artifacts

def layout(workdir: Path) -> dict[str, Path]:
    """Where the artifacts live: the project folder, and one export folder per GGUF type (the Q8_0 and Q4_K_M
    folders hold their own decoder and links to the F16 export's other files)."""
    return {"project": workdir / "project", **{quant: workdir / f"export-{quant}" for quant in QUANTS},
            "stamp": workdir / "artifacts.json", "marker": workdir / ".bench-cpu-serving"}


def build_model(quick: bool, backbone: str):
    import torch

    from model import backbones

    chosen = backbones.named(backbone)
    if quick:
        from model.checkpoint.convert import load_model

        return load_model(chosen.presets[0], dtype=torch.bfloat16)
    # The real checkpoint's architecture with seeded random weights, built in bfloat16 from the start (a float32
    # build would hold 13 GB, and 20 GB while cast).
    hub_id, layout = next(iter(chosen.hub_ids.items()))
    return chosen.build(chosen.config(layout, None, hub_id), torch.bfloat16).eval()


def write_project_folder(model, folder: Path) -> None:
    """The folder as training writes it: weights, processor, default render and generation settings."""
    from config import GenerationSettings, RenderConfig, save_run_settings
    from model import backbones
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    render = RenderConfig()
    model.save_pretrained(folder, max_shard_size=SHARD)
    pages = backbones.of_model(model).page_processor(render.mode)
    DeepSeekOCRProcessor(load_tokenizer(), pages).save_pretrained(folder)
    save_run_settings(folder, render, GenerationSettings())


def build_artifacts(workdir: Path, quick: bool, backbone: str) -> None:
    """Every file the paths read (runs in a child process: the model is freed with it)."""
    from data.jsonl import write_json_atomic
    from model.checkpoint.export import export_model
    from model.checkpoint.gguf import GGUF_DIR, gguf_files, write_gguf

    places = layout(workdir)
    if workdir.is_dir() and any(workdir.iterdir()):
        if not places["marker"].is_file():  # never wipe a folder this benchmark did not make
            raise SystemExit(f"--workdir {workdir} is not empty and was not made by this benchmark")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    places["marker"].touch()
    log(f"building the {backbone} {'preset' if quick else 'real-size'} model (seeded, bfloat16) in {workdir}")
    model = build_model(quick, backbone)
    write_project_folder(model, places["project"])
    del model
    log("exporting it with the F16 GGUF decoder (llama.cpp's converter)")
    export_model(str(places["project"]), places["f16"], "bfloat16", max_shard_size=SHARD, gguf="f16")
    for quant in QUANTS[1:]:
        log(f"writing the {quant.upper()} decoder")
        stage = places[quant]
        stage.mkdir()
        for item in places["f16"].iterdir():
            if item.name != GGUF_DIR:
                (stage / item.name).symlink_to(item)
        write_gguf(stage, quant, with_mmproj=False)
    files = {quant: [str(path) for path in gguf_files(places[quant])] for quant in QUANTS}
    write_json_atomic(places["stamp"], {"model": f"{backbone} {'preset' if quick else 'real size, random'}",
                                        "seed": 0, "gguf": files})


def ensure_artifacts(workdir: Path, quick: bool, backbone: str = DEFAULT_BACKBONE) -> dict[str, Path]:
    places = layout(workdir)
    if places["stamp"].is_file():
        log(f"artifacts found in {workdir}")
        return places
    status = run_child(["--child", "build"], workdir, quick, backbone)
    if status != 0 or not places["stamp"].is_file():
        raise SystemExit(f"building the artifacts in {workdir} failed (exit status {status})")
    return places


# ------------------------------------------------------------------------------------------------ child processes

def run_child(arguments: list[str], workdir: Path, quick: bool, backbone: str = DEFAULT_BACKBONE) -> int:
    """Exit status of this module run with `arguments` in a child process at THREADS threads. A path's child
    reports its own peak RSS: it resets the count after loading, which the parent's ru_maxrss would not show."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    command = [sys.executable, "-m", "benchmarks.bench_cpu_serving", *arguments, "--workdir", str(workdir),
               "--backbone", backbone, *(["--quick"] if quick else [])]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def wait_peak(process: subprocess.Popen) -> tuple[int, int]:
    """Wait for a child; its exit status and peak RSS in bytes (ru_maxrss of that child alone, in KiB on Linux)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024


def peak_rss() -> int:
    """This process's peak RSS in bytes since it started or since `reset_peak_rss`."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def reset_peak_rss() -> bool:
    """Start the peak RSS count afresh (Linux's clear_refs), so serving is measured apart from loading."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_path(name: str, places: dict[str, Path], quick: bool) -> dict:
    """One path's figures, in this (child) process."""
    import torch

    torch.set_num_threads(THREADS)  # the llamacpp engine gives llama.cpp torch's thread count
    from config import LoadSettings
    from inference.summarizer import DeepSeekSummarizer
    from model import backbones

    spec, size = PATHS[name], sizes(quick)
    folder = places[spec["quant"]] if spec["engine"] == "llamacpp" else places["project"]
    began = time.perf_counter()
    summarizer = DeepSeekSummarizer.from_pretrained(
        folder, load=LoadSettings(device="cpu", dtype=spec["dtype"], engine=spec["engine"]))
    model = summarizer.backend.model
    encoder = backbones.of_model(model).encoder(model)
    row = {"path": name, "engine": spec["engine"],
           "encoder_dtype": str(next(encoder.parameters()).dtype).removeprefix("torch."),
           "load_s": round(time.perf_counter() - began, 1),
           "weights_gb": round(weights_bytes(model, spec, places) / GB, 2),
           "load_peak_rss_gb": round(peak_rss() / GB, 2)}
    resets = reset_peak_rss()
    log(f"{name}: loaded in {row['load_s']} s")
    for mode in MODES:
        row[f"encode_s_{mode_side(mode)}"] = round(encode_seconds(model, mode, size["encode_repeats"]), 3)
        log(f"{name}: encode {mode} {row[f'encode_s_{mode_side(mode)}']} s")
    row.update(generation_figures(summarizer, spec["compile"], size["new_tokens"], size["generate_repeats"], name))
    row["serving_peak_rss_gb"] = round(peak_rss() / GB, 2) if resets else "unknown"
    return row


def weights_bytes(model, spec: dict, places: dict[str, Path]) -> int:
    """What the path holds as weights: the torch model's parameters (the llamacpp engine's are its encoder's),
    plus the GGUF decoder file."""
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    if spec["engine"] == "llamacpp":
        from model.checkpoint.gguf import decoder_gguf

        held += decoder_gguf(places[spec["quant"]]).stat().st_size
    return held


def mode_side(mode: str) -> int:
    from config.modes import RESOLUTION_MODES

    return RESOLUTION_MODES[mode].base_size


def encode_seconds(model, mode: str, repeats: int) -> float:
    """Seconds from one page's pixels (a rendered bundled page in `mode`) to its page embeddings."""
    import torch

    from benchmarks.timing import median_seconds
    from config import RenderConfig
    from data.text_to_image import TextToImageConverter
    from model import backbones
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    backbone = backbones.of_model(model)
    page = TextToImageConverter(RenderConfig(mode=mode)).render(page_text()).pages[0].convert("RGB")
    batch = DeepSeekOCRProcessor(load_tokenizer(), backbone.page_processor(mode))([[page]])

    def encode():
        return backbone.image_features(model, batch)

    with torch.inference_mode():
        return median_seconds(encode, torch.device("cpu"), repeats)


def generation_figures(summarizer, compile: bool, new_tokens: int, repeats: int, name: str) -> dict:
    """First-token seconds, decoding tokens/s at batch 1 and BATCH, and one page end to end, through the
    summarizer's own rendering and backend, every generation forced to its token count."""
    import torch

    text = page_text()

    def kwargs(tokens: int) -> dict:
        settings = dataclasses.replace(summarizer.generation_settings(max_length=tokens), compile=compile)
        # The summarizer's own generate arguments (the fast decode path's included), forced to `tokens` tokens.
        return {**summarizer.generate_kwargs(settings), "min_new_tokens": tokens}

    def timed(documents, tokens: int) -> float:
        began = time.perf_counter()
        with torch.inference_mode():
            summarizer.backend.generate(documents, kwargs(tokens))
        return time.perf_counter() - began

    def one_page() -> tuple[float, float]:
        """(end to end, generation alone) seconds: rendering the text, then new_tokens tokens."""
        began = time.perf_counter()
        document = summarizer.prepare_text(text)
        generation = timed([document], new_tokens)
        return time.perf_counter() - began, generation

    document = summarizer.prepare_text(text)
    if len(document.pages) != 1:
        raise RuntimeError(f"the bundled text renders to {len(document.pages)} pages, not one")
    figures = {}
    for batch in (1, BATCH):
        documents = [document] * batch
        first = median([timed(documents, 1) for _ in range(repeats + 1)][1:])  # the first call warms up
        if batch == 1:
            runs = [one_page() for _ in range(repeats + 1)][1:]
            figures["first_token_s"] = round(first, 2)
            figures["e2e_s"] = round(median([total for total, _ in runs]), 2)
            full = median([generation for _, generation in runs])
        else:
            full = median([timed(documents, new_tokens) for _ in range(repeats + 1)][1:])
        # A busy machine can make the longer call no longer (llama.cpp's threads spin while waiting for a core).
        figures[f"decode_tok_s_b{batch}"] = round(batch * (new_tokens - 1) / (full - first), 1) if full > first \
            else f"not measurable: {new_tokens} tokens took no longer than 1 (a busy machine?)"
        log(f"{name}: batch {batch}: {figures[f'decode_tok_s_b{batch}']} tokens/s")
    return figures


def child_main(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    if args.child == "build":
        build_artifacts(workdir, args.quick, args.backbone)
        return 0
    from data.jsonl import write_json_atomic

    try:
        row = measure_path(args.child, layout(workdir), args.quick)
    except Exception as err:  # reported as the path's row: one failing path must not hide the others
        traceback.print_exc()
        row = {"path": args.child, "error": f"{type(err).__name__}: {err}"[:300]}
    write_json_atomic(args.result, row)
    return 0


def path_row(name: str, workdir: Path, quick: bool, backbone: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "row.json"
        status = run_child(["--child", name, "--result", str(result)], workdir, quick, backbone)
        if not result.is_file():
            return {"path": name, "error": f"child exited with status {status}"
                    + (" (killed: out of memory?)" if status == -9 else "")}
        return json.loads(result.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ llama.cpp tools

def tool_rows(bin_dir: Optional[Path], places: dict[str, Path], quick: bool) -> list[dict]:
    """llama.cpp's own tools on the same GGUF files, one row per quantization."""
    from model.checkpoint.gguf import decoder_gguf, gguf_files

    missing = [tool for tool in TOOLS if bin_dir is None or not (bin_dir / tool).is_file()]
    rows = []
    for quant in QUANTS:
        row = {"path": f"llama.cpp tools {quant.upper()}", "engine": "llama.cpp"}
        if missing:
            rows.append({**row, "error": f"not measured ({', '.join(missing)} not found; --llama-cpp-bin DIR)"})
            continue
        gguf = decoder_gguf(places[quant])
        mmproj = [path for path in gguf_files(places["f16"]) if path.name.startswith("mmproj-")]
        row["weights_gb"] = round(gguf.stat().st_size / GB, 2)
        try:
            row.update(tool_figures(bin_dir, gguf, mmproj[0] if mmproj else None, places["f16"].parent, quick))
        except (RuntimeError, ValueError) as err:
            row["error"] = str(err)[:300]
        log(f"{row['path']}: {row}")
        rows.append(row)
    return rows


def run_tool(command: list[str]) -> tuple[str, int, float]:
    """(stdout + stderr, peak RSS bytes, wall seconds) of one tool run; a failure is a RuntimeError with its last
    line."""
    # A random model's text may stop inside a UTF-8 sequence: read what the tool printed, whatever it is.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        status, peak = wait_peak(process)
        seconds = time.perf_counter() - began
        output.seek(0)
        text = output.read()
    if status != 0:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
        raise RuntimeError(f"{Path(command[0]).name} exited with status {status}: {last[0]}")
    return text, peak, seconds


def tool_figures(bin_dir: Path, gguf: Path, mmproj: Optional[Path], workdir: Path, quick: bool) -> dict:
    tokens, repeats = sizes(quick)["new_tokens"], sizes(quick)["generate_repeats"]
    threads = ["-t", str(THREADS)]
    figures, peaks = {}, []
    text, peak, _ = run_tool([str(bin_dir / "llama-bench"), "-m", str(gguf), *threads, "-p", "0", "-n", str(tokens),
                           "-r", str(repeats + 1), "-o", "json"])
    peaks.append(peak)
    tests = json.loads(text[text.index("["):])
    figures["decode_tok_s_b1"] = round(next(test["avg_ts"] for test in tests if test["n_gen"] > 0), 1)
    text, peak, _ = run_tool([str(bin_dir / "llama-batched-bench"), "-m", str(gguf), *threads, "-tb", str(THREADS),
                           "-c", str(BATCH * (128 + tokens) + 256), "-npp", "128", "-ntg", str(tokens),
                           "-npl", f"1,{BATCH}", "--output-format", "jsonl"])
    peaks.append(peak)
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    figures[f"decode_tok_s_b{BATCH}"] = round(next(r["speed_tg"] for r in results if r["pl"] == BATCH), 1)
    if mmproj is None:
        figures["e2e_s"] = "not measured (no vision projector GGUF: a tiny SAM has none)"
    else:
        pages = page_images(workdir)
        for mode in MODES:
            text, peak, seconds = run_tool([str(bin_dir / "llama-mtmd-cli"), "-m", str(gguf), "--mmproj", str(mmproj),
                                   "--image", str(pages[mode]), "-p", "Summarize this document.", "-n", str(tokens),
                                   "--ignore-eos", "--temp", "0", *threads, "--chat-template", "deepseek-ocr"])
            peaks.append(peak)
            log_figures = mtmd_figures(text, seconds)
            figures[f"encode_s_{mode_side(mode)}"] = log_figures["encode_s"]
            if mode == MODES[0]:
                figures["e2e_s"] = log_figures["e2e_s"]
    figures["serving_peak_rss_gb"] = round(max(peaks) / GB, 2)
    return figures


def page_images(workdir: Path) -> dict[str, Path]:
    """The bundled page rendered in each mode, as PNG files for llama-mtmd-cli."""
    from config import RenderConfig
    from data.text_to_image import TextToImageConverter

    pages = {}
    for mode in MODES:
        pages[mode] = workdir / f"page-{mode}.png"
        if not pages[mode].is_file():
            TextToImageConverter(RenderConfig(mode=mode)).render(page_text()).pages[0].convert("RGB").save(pages[mode])
    return pages


def mtmd_figures(text: str, seconds: float) -> dict:
    """From one llama-mtmd-cli run (its log and wall seconds): the page's encode seconds, and end to end without
    loading (from the encode's start, which its log stamps with the time since the process started, to the exit:
    the encode, the page's prefill, then the generated tokens)."""
    started = re.search(r"^(\d+)\.(\d+)\.(\d+)\.\d+ I encoding mtmd batch", text, re.MULTILINE)
    encoded = re.findall(r"mtmd batch encoding done in (\d+) ms", text)
    if not started or not encoded:
        raise ValueError("llama-mtmd-cli's log lacks its image encode lines (another llama.cpp version?)")
    minutes, whole, millis = (int(part) for part in started.groups())
    return {"encode_s": round(sum(int(ms) for ms in encoded) / 1000, 2),
            "e2e_s": round(seconds - (60 * minutes + whole + millis / 1000), 2)}


# ------------------------------------------------------------------------------------------------ report

def add_ratios(rows: list[dict]) -> None:
    """Speed-ups over torch float32 (times: its / this; tokens/s: this / its) and memory as a share of its; each
    llamacpp engine row's decoding rate as a share of llama.cpp's own tools on the same GGUF file."""
    for row in rows:
        if row["path"].startswith("llamacpp-"):
            tools = next((r for r in rows if r["path"] == f"llama.cpp tools {row['path'].split('-')[1]}"), {})
            for batch in (1, BATCH):
                mine, theirs = row.get(f"decode_tok_s_b{batch}"), tools.get(f"decode_tok_s_b{batch}")
                if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and theirs:
                    row[f"decode_b{batch}_vs_tools"] = round(mine / theirs, 2)
    base = next((row for row in rows if row["path"] == BASELINE and "error" not in row), None)
    if base is None:
        return
    for row in rows:
        for key, ratio in (("encode_s_1024", "encode_x"), ("e2e_s", "e2e_x"), ("decode_tok_s_b1", "decode_x"),
                           ("serving_peak_rss_gb", "memory_share")):
            mine, theirs = row.get(key), base.get(key)
            if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and mine and theirs:
                row[ratio] = round(theirs / mine if key == "encode_s_1024" or key == "e2e_s" else mine / theirs, 2)


def goals(rows: list[dict]) -> list[dict]:
    """The issue's targets, against the Q4_K_M engine's row (2 threads, real size)."""
    engine = next((row for row in rows if row["path"] == "llamacpp-Q4_K_M"), {})
    targets = [("decode tokens/s at batch 1", "decode_tok_s_b1", ">=", 30),
               ("page encode at 1024 (s, bf16 units)", "encode_s_1024", "<=", 1.5),
               (f"one page + {sizes(False)['new_tokens']} tokens end to end (s)", "e2e_s", "<=", 6),
               ("serving memory (GB)", "serving_peak_rss_gb", "<=", 4)]
    result = []
    for goal, key, sign, target in targets:
        value = engine.get(key)
        met = isinstance(value, (int, float)) and (value >= target if sign == ">=" else value <= target)
        result.append({"goal (llamacpp-Q4_K_M)": goal, "target": f"{sign} {target}", "measured": value, "met": met})
    return result


def run(quick: bool = False, workdir: Optional[Path] = None, llama_cpp_bin: Optional[Path] = None,
        paths: Optional[list[str]] = None, backbone: str = DEFAULT_BACKBONE) -> list[dict]:
    workdir = Path(workdir or default_workdir(quick, backbone)).expanduser()
    places = ensure_artifacts(workdir, quick, backbone)
    rows = []
    for name in paths or list(PATHS):
        log(f"{name} ...")
        rows.append(path_row(name, workdir, quick, backbone))
        log(f"{name}: {rows[-1]}")
    bin_dir = llama_cpp_bin or os.environ.get("LLAMA_CPP_BIN")
    rows += tool_rows(Path(bin_dir).expanduser() if bin_dir else None, places, quick)
    add_ratios(rows)
    return rows


def write_report(rows: list[dict], output: Path, command: str) -> None:
    from benchmarks.run_all import machine
    from data.jsonl import write_json_atomic, write_text_atomic

    goal_rows = goals(rows)
    markdown = "\n".join([f"Machine: {machine()}, {THREADS} threads. Reproduce with `{command}`.", "",
                          table(rows), "", table(goal_rows), ""])
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, markdown)
    write_json_atomic(output.with_suffix(".json"), {"machine": machine(), "threads": THREADS, "command": command,
                                                    "rows": rows, "goals": goal_rows})
    log(f"wrote {output} and {output.with_suffix('.json').name}")


def main(argv=None) -> int:
    parser = Parser(prog="python -m benchmarks.bench_cpu_serving", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny-random preset, 8 new tokens")
    parser.add_argument("--workdir", metavar="DIR",
                        help="where the model, its export and GGUF files are built once and reused (default: "
                             f"{default_workdir(False)}, or .../tiny-random with --quick)")
    parser.add_argument("--llama-cpp-bin", metavar="DIR", help="folder holding llama.cpp's " + ", ".join(TOOLS)
                        + " (default: $LLAMA_CPP_BIN); without them those rows say 'not measured'")
    parser.add_argument("--paths", help=f"comma-separated subset of: {', '.join(PATHS)} (default: all)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help="the model measured: deepseek-ocr or deepseek-ocr-2 (model/backbones' registry); its "
                             "artifacts are built in their own --workdir")
    parser.add_argument("--output", metavar="FILE", help="Markdown report, with its JSON beside it (default: "
                        "benchmarks/results/cpu_serving.md; with --quick, printed only)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one path (or the build) in a child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    from model import backbones  # after --help, which needs no torch

    if args.backbone not in backbones.BACKBONES:
        parser.error(f"unknown --backbone {args.backbone!r}; choose from {', '.join(backbones.BACKBONES)}")
    paths = args.paths.split(",") if args.paths else None
    unknown = [name for name in paths or [] if name not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    rows = run(args.quick, args.workdir, args.llama_cpp_bin, paths, args.backbone)
    print(table(rows))
    suffix = "" if args.backbone == DEFAULT_BACKBONE else f"_{args.backbone.replace('-', '_')}"
    output = args.output or (None if args.quick else f"benchmarks/results/cpu_serving{suffix}.md")
    if output:
        command = " ".join(["python -m benchmarks.bench_cpu_serving", *(sys.argv[1:] if argv is None else argv)])
        write_report(rows, Path(output), command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
