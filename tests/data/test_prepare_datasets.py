"""The prepare CLI end to end: outputs, page images, skipped records, resume after a kill, clean errors."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from config import RenderConfig
from config.cli import settings_from_args, to_argv
from config.jobs import PrepareJob
from data.jsonl import read_jsonl
from data.prepare_datasets import build_parser, main, prepare
from data.tokens import count_text_tokens

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "data.prepare_datasets"]
ARGS = ["bundled", "--max-samples", "3", "--generate-images", "--mode", "tiny"]


def _run(args, **kwargs):
    return subprocess.run(CLI + args, cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One uninterrupted CLI run (two workers): the reference every other run must match."""
    out = tmp_path_factory.mktemp("prepared") / "out"
    result = _run(ARGS + ["--workers", "2", "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr
    return out, result


def _snapshot(out: Path) -> dict:
    """Every output file's bytes; the report without its run-dependent timing and location."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    report = json.loads(files.pop("prepare_report.json"))
    del report["throughput"], report["output_dir"]
    return {"files": files, "report": report}


def test_cli_writes_splits_images_config_and_report(prepared):
    out, result = prepared
    assert "records/s" in result.stdout and str(out) in result.stdout
    for split in ("train", "val", "test"):
        records = read_jsonl(out / f"{split}.jsonl")
        assert len(records) == 3
        for record in records:
            assert set(record) == {"id", "text", "summary", "references", "images", "render"}
            assert record["render"]["mode"] == "tiny" and record["render"]["pages"] == len(record["images"]) >= 1
            assert set(record["render"]) == {"pages", "text_tokens", "vision_tokens", "compression_ratio", "mode",
                                             "backbone"}
            assert record["render"]["vision_tokens"] == 64 * record["render"]["pages"]  # DeepSeek-OCR's 512 px view
            for image in record["images"]:
                assert image.startswith(f"images/{split}/")
                assert Image.open(out / image).size == (512, 512)
    assert json.loads((out / "render_config.json").read_text())["mode"] == "tiny"
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["splits"]["val"] == {"written": 3, "skipped": {}, "over_context": 0}
    assert report["context"] == {"positions": 8192, "max_length": 512, "backbone": "deepseek-ocr"}
    assert report["throughput"]["records_per_s"] > 0
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow  # the command in a fresh process, killed
def test_resume_after_kill_gives_identical_outputs(prepared, tmp_path):
    reference, _ = prepared
    out = tmp_path / "out"
    # A real kill: stop the whole process group as soon as the first page is complete.
    process = subprocess.Popen(CLI + ARGS + ["--workers", "2", "--output-dir", str(out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and not list(out.glob("images/*/*.json")):
        time.sleep(0.05)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Whatever the kill left, make it worse the ways a kill can: lost outputs and stray temporaries.
    out.mkdir(exist_ok=True)
    shutil.copytree(reference / "images", out / "images", dirs_exist_ok=True)
    (out / "val.jsonl").unlink(missing_ok=True)
    for sidecar in sorted((out / "images" / "train").glob("*.json"))[:2]:
        sidecar.unlink()
    next((out / "images" / "test").glob("*.png")).unlink()
    (out / ".train.jsonl.tmp").write_text('{"half": ')
    (out / "images" / "val" / ".x_p000.png.abc123.tmp").write_bytes(b"\x89PNG")

    result = prepare(PrepareJob(output_dir=str(out), max_samples=3, generate_images=True,
                                render=RenderConfig(mode="tiny"), workers=1), progress=False)
    assert result.written == {"train": 3, "val": 3, "test": 3} and result.output_dir == str(out)
    report = result.report
    assert report["throughput"]["reused"] >= 1 and report["throughput"]["rendered"] >= 3
    assert _snapshot(out) == _snapshot(reference)


def test_render_failures_are_skipped_and_counted(tmp_path):
    source = tmp_path / "docs.jsonl"
    rows = [{"id": "short", "text": "A short document.", "summary": "Short."},
            {"id": "long", "text": "A much longer document. " * 400, "summary": "Long."},
            {"id": "empty", "text": "  ", "summary": "Nothing."}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = prepare(PrepareJob(source=str(source), output_dir=str(out), generate_images=True, workers=1,
                                render=RenderConfig(mode="tiny", overflow="error")), progress=False)
    report = result.report
    assert sum(result.written.values()) == 1
    written = {split: read_jsonl(out / f"{split}.jsonl") for split in ("train", "val", "test")}
    assert [r["id"] for recs in written.values() for r in recs] == ["short"]
    skipped = {reason: n for counts in report["splits"].values() for reason, n in counts["skipped"].items()}
    assert skipped == {"render error": 1, "empty text": 1}
    assert not list(out.glob("images/*/long*"))


def _bundled_text(characters: int) -> str:
    """The bundled sources joined, at least `characters` long."""
    rows = read_jsonl(ROOT / "data/bundled/scitldr-a/train.jsonl")
    text, index = "", 0
    while len(text) < characters:
        text += " ".join(rows[index % len(rows)]["source"]) + "\n\n"
        index += 1
    return text


def test_records_longer_than_the_real_context_are_counted_and_kept(tmp_path, capsys):
    # Tiny pages take 73 positions each: 8,192 positions are some 110 pages of text, a few hundred thousand
    # characters; the pages are counted from the layout, nothing drawn.
    source = tmp_path / "docs.jsonl"
    rows = [{"id": "short", "text": "A short document.", "summary": "Short."},
            {"id": "book", "text": _bundled_text(300_000), "summary": "A whole book."},
            {"id": "abstract", "text": _bundled_text(2_000), "summary": "An abstract."}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main([str(source), "--mode", "tiny", "--output-dir", str(out)]) == 0
    report = json.loads((out / "prepare_report.json").read_text())
    assert sum(split["written"] for split in report["splits"].values()) == 3  # counted, not dropped
    assert sum(split["over_context"] for split in report["splits"].values()) == 1
    printed = capsys.readouterr().out
    assert "1 records (kept) take more than the 8192 positions of the decoder (pages as deepseek-ocr reads them)" \
        in printed
    per_split = re.findall(r"longer than the context: (\d+)", printed)
    assert len(per_split) == 3 and sum(map(int, per_split)) == 1


def test_rendered_pages_are_counted_against_the_context(tmp_path, monkeypatch):
    from data import prepare_datasets
    from data.tokens import count_text_tokens

    context = 7 + 73 + 16  # BOS and instruction, one tiny page, a summary of 15 tokens and its EOS
    monkeypatch.setattr(prepare_datasets, "DECODER_CONTEXT", context)
    out = tmp_path / "out"
    report = prepare(PrepareJob(output_dir=str(out), max_samples=4, generate_images=True, workers=1,
                                render=RenderConfig(mode="tiny")), progress=False).report
    for split in ("train", "val", "test"):
        records = read_jsonl(out / f"{split}.jsonl")
        longer = [r for r in records if 7 + 73 * len(r["images"]) + count_text_tokens(r["summary"].strip()) + 1
                  > context]
        assert report["splits"][split]["over_context"] == len(longer)
    assert 0 < sum(split["over_context"] for split in report["splits"].values()) < 12


def test_pages_are_counted_as_the_chosen_backbone_reads_them(tmp_path, monkeypatch):
    """DeepSeek-OCR-2 reads a small page as a 768 px view: 144 vision tokens and 145 positions (DeepSeek-OCR: 100
    and 111); a rerun with the other backbone reuses the pages (the same whichever model reads them) and counts
    them for its own."""
    from data import prepare_datasets

    monkeypatch.setattr(prepare_datasets, "DECODER_CONTEXT", 7 + 145 + 16)  # BOS and instruction, a page, a summary
    out, counts = tmp_path / "out", {}
    for backbone, vision, positions in (("deepseek-ocr-2", 144, 145), ("deepseek-ocr", 100, 111)):
        report = prepare(PrepareJob(output_dir=str(out), max_samples=4, generate_images=True, workers=1,
                                    backbone=backbone), progress=False).report
        assert report["context"]["backbone"] == backbone
        records = sum(split["written"] for split in report["splits"].values())
        drawn = (records, 0) if backbone == "deepseek-ocr-2" else (0, records)  # the second run reuses every page
        assert (report["throughput"]["rendered"], report["throughput"]["reused"]) == drawn
        records = read_jsonl(out / "test.jsonl")
        assert all(r["render"]["vision_tokens"] == vision * r["render"]["pages"] for r in records)
        assert all(r["render"]["backbone"] == backbone for r in records)
        counts[backbone] = sum(split["over_context"] for split in report["splits"].values())
        expected = sum(7 + positions * len(r["images"]) + count_text_tokens(r["summary"].strip()) + 1 > 7 + 145 + 16
                       for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl"))
        assert counts[backbone] == expected
    assert counts["deepseek-ocr-2"] > counts["deepseek-ocr"]


def test_wrong_field_is_one_line_error(tmp_path, capsys):
    source = tmp_path / "docs.csv"
    source.write_text("body,tldr\nSome text.,Short.\n")
    assert main([str(source), "--text-field", "nope", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'nope'" in err and "available columns: body, tldr" in err


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "file not found"),
    (["bundled", "--max-samples", "0"], "argument --max-samples: input should be greater than or equal to 1"),
    (["bundled", "--workers", "0"], "argument --workers: input should be greater than or equal to 1"),
    (["bundled", "--font-size", "2"], "argument --font-size: input should be greater than or equal to 4"),
    (["bundled", "--mode", "huge"], "mode"),
    (["bundled", "--backbone", "deepseek-ocr-2", "--mode", "tiny"], "'mode' must be one of small, base, large, "
     "gundam, page for backbone deepseek-ocr-2, got 'tiny'"),
    (["bundled", "--backbone", "ocr3"], "--backbone"),
    (["bundled", "--workers", "many"], "--workers"),
])
def test_cli_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = _run(args + ["--output-dir", str(tmp_path / "out")])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


README_COMMANDS = [
    "ccdv/cnn_dailymail --subset 3.0.0 --generate-images",
    "bundled --max-samples 3 --generate-images --mode tiny --workers 2 --font-size 10 --output-dir out",
    "docs.csv --text-field body --summary-field tldr --seed 7 --max-pages 4 --overflow error --line-spacing 1.5 "
    "--margin 12",
]


@pytest.mark.parametrize("command", README_COMMANDS)
def test_flags_make_the_job_and_the_job_gives_its_command_back(command):
    """The parser is the job's declaration: each flag lands in its field, and to_argv(job) parses to the same job."""
    parser = build_parser()
    job = settings_from_args(parser, PrepareJob, parser.parse_args(command.split()))
    words = command.split()
    assert job.source == words[0]
    for flag, value in zip(words, words[1:]):
        if flag.startswith("--") and not value.startswith("--"):
            key = flag[2:].replace("-", "_")
            block = job.render if key in ("mode", "font_size", "line_spacing", "margin", "overflow", "max_pages") \
                else job
            assert str(getattr(block, key)) == value, flag
    assert job.generate_images == ("--generate-images" in words)
    assert settings_from_args(parser, PrepareJob, parser.parse_args(to_argv(job))) == job
    assert settings_from_args(parser, PrepareJob, parser.parse_args([])) == PrepareJob()  # source 'bundled'


def test_help_describes_the_options():
    result = _run(["--help"])
    assert result.returncode == 0
    for flag in ("--generate-images", "--max-samples", "--workers", "--overflow", "bundled"):
        assert flag in result.stdout


class Killed(BaseException):
    """A kill at a chosen moment, in-process (workers=1)."""


def _index(out: Path) -> list[str]:
    """The files that describe the page images, as they are now."""
    names = ["train.jsonl", "val.jsonl", "test.jsonl", "render_config.json", "prepare_report.json"]
    return [name for name in names if (out / name).exists()]


def test_a_killed_run_with_other_render_settings_leaves_no_mixed_pages(tmp_path, monkeypatch):
    from data.text_to_image import TextToImageConverter

    out = tmp_path / "out"
    job = PrepareJob(output_dir=str(out), max_samples=1, generate_images=True, render=RenderConfig(mode="tiny"),
                     workers=1)
    prepare(job, progress=False)
    reference = _snapshot(out)
    save_pages = TextToImageConverter.save_pages

    def killed_after_the_pages(self, document, out_dir, stem):
        save_pages(self, document, out_dir, stem)
        raise Killed  # the pages of the first record rewritten, its sidecar not yet

    monkeypatch.setattr(TextToImageConverter, "save_pages", killed_after_the_pages)
    with pytest.raises(Killed):
        prepare(PrepareJob(output_dir=str(out), max_samples=1, generate_images=True, workers=1,
                           render=RenderConfig(mode="tiny", font_size=10)), progress=False)
    assert _index(out) == []  # no split file points at the rewritten pages
    monkeypatch.undo()
    result = prepare(job, progress=False)  # the first settings again: the rewritten pages are rendered anew
    assert result.report["throughput"]["rendered"] == 1 and _snapshot(out) == reference


def test_pages_of_another_text_under_the_same_id_are_not_reused(tmp_path):
    source = tmp_path / "docs.jsonl"
    render = RenderConfig(mode="tiny")

    def prepared(text, out):
        source.write_text(json.dumps({"id": "doc", "text": text, "summary": "S."}) + "\n")
        return prepare(PrepareJob(source=str(source), output_dir=str(out), generate_images=True, workers=1,
                                  render=render), progress=False)

    prepared("The first text, about rivers.", tmp_path / "out")
    result = prepared("Another text entirely, about mountains and their snow.", tmp_path / "out")
    assert result.report["throughput"]["rendered"] == 1
    prepared("Another text entirely, about mountains and their snow.", tmp_path / "fresh")
    assert _snapshot(tmp_path / "out")["files"] == _snapshot(tmp_path / "fresh")["files"]


def test_a_kill_between_the_split_renames_leaves_no_split_of_the_previous_run(tmp_path, monkeypatch):
    from data.jsonl import AtomicJsonlWriter

    out = tmp_path / "out"
    prepare(PrepareJob(output_dir=str(out), max_samples=2, workers=1), progress=False)
    commit, renamed = AtomicJsonlWriter.commit, []

    def killed_after_the_first(writer):
        if renamed:
            raise Killed
        commit(writer)
        renamed.append(writer.path.name)

    monkeypatch.setattr(AtomicJsonlWriter, "commit", killed_after_the_first)
    with pytest.raises(Killed):
        prepare(PrepareJob(output_dir=str(out), max_samples=1, workers=1), progress=False)
    assert _index(out) == renamed == ["train.jsonl"] and len(read_jsonl(out / "train.jsonl")) == 1
