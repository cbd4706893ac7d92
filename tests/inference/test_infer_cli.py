"""The infer CLI: reference flags, stdin, JSON output, images, PDFs, and one-line errors without tracebacks.

Most tests call `main()` in-process with the session's summarizer patched in (loading is tested once, in the
subprocess test that runs the README's command)."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from inference import infer
from inference.summarizer import DeepSeekSummarizer

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = "The city opened a new library on Friday. Hundreds of readers queued before dawn. " * 5


@pytest.fixture()
def patched(monkeypatch, summarizer):
    """from_pretrained returns the already loaded tiny summarizer; records what it was asked for."""
    calls = []

    def fake(path, device=None, dtype=None, experts_implementation=None):
        calls.append((str(path), device, dtype, experts_implementation))
        return summarizer

    monkeypatch.setattr(DeepSeekSummarizer, "from_pretrained", staticmethod(fake))
    return calls


@pytest.fixture()
def article(tmp_path):
    path = tmp_path / "article.txt"
    path.write_text(ARTICLE, encoding="utf-8")
    return path


def set_stdin(monkeypatch, data: bytes, tty: bool = False):
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    stream.isatty = lambda: tty
    monkeypatch.setattr(sys, "stdin", stream)


def test_experts_implementation_reaches_the_loader(patched, article, capsys):
    code = infer.main(["--model_path", "m", "--input_file", str(article), "--max_length", "2",
                       "--experts_implementation", "eager"])
    assert code == 0 and patched == [("m", None, None, "eager")]


def test_text_file_json_output(patched, article, capsys, summarizer):
    code = infer.main(["--model_path", "m", "--input_file", str(article), "--max_length", "3", "--json",
                       "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and patched == [("m", "cpu", None, None)]
    assert out["input"] == str(article) and out["pages"] == 1 and out["vision_tokens"] == 64
    assert out["summary"] == summarizer.summarize_text(ARTICLE, max_length=3).summary


@pytest.mark.parametrize("argv", [["-"], []], ids=["dash", "piped"])
def test_text_from_stdin(patched, monkeypatch, capsys, argv):
    set_stdin(monkeypatch, ARTICLE.encode())
    assert infer.main(["--model_path", "m", "--max_length", "2", *argv]) == 0
    assert capsys.readouterr().out.strip()


def test_images_and_pdf(patched, tmp_path, capsys):
    images = []
    for index, fmt in enumerate(["PNG", "JPEG"]):
        images.append(tmp_path / f"page{index}.{fmt.lower()}")
        Image.new("RGB", (120, 90), "white").save(images[-1], format=fmt)
    assert infer.main(["--model_path", "m", "--image_path", *map(str, images), "--max_length", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and str(images[1]) in out
    pdf = tmp_path / "doc.pdf"
    Image.new("RGB", (100, 60), "white").save(pdf, resolution=72)
    assert infer.main(["--model_path", "m", "--pdf_path", str(pdf), "--dpi", "72", "--json", "--max_length", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["pages"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--input_file", "missing.txt"], "input file not found: missing.txt"),
    (["--image_path", "missing.png"], "image file not found: missing.png"),
    (["--pdf_path", "missing.pdf"], "pdf file not found: missing.pdf"),
    (["--input_file", "{bad_text}"], "not valid UTF-8"),
    (["--image_path", "{bad_image}"], "not a readable image"),
    (["--input_file", "{article}", "--max_length", "0"], "'max_length' is out of range"),
    (["--input_file", "{article}", "--num_beams", "99"], "'num_beams' is out of range"),
])
def test_input_errors_are_one_line(patched, tmp_path, article, capsys, argv, message):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    paths = {"bad_text": tmp_path / "bad.txt", "bad_image": tmp_path / "bad.png", "article": article}
    argv = [a.format(**paths) for a in argv]
    assert infer.main(["--model_path", "m", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_model_and_no_input(monkeypatch, article, capsys):
    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert infer.main(["--input_file", str(article)]) == 1
    assert "no model" in capsys.readouterr().err
    set_stdin(monkeypatch, b"", tty=True)
    assert infer.main(["--model_path", "m"]) == 1
    assert "no input" in capsys.readouterr().err


def test_unloadable_model_is_one_line(tmp_path, article, capsys):
    assert infer.main(["--model_path", str(tmp_path / "nowhere"), "--input_file", str(article)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_readme_command_in_a_subprocess(tiny_model_dir, article):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inference.infer", "--model_path", str(tiny_model_dir),
               "--input_file", str(article), "--max_length", "3"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr
    missing = subprocess.run(command[:5] + ["--image_path", "nope.png"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=120)
    assert missing.returncode == 1 and missing.stderr == "error: image file not found: nope.png\n"
