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

from config import LoadSettings
from inference import infer
from inference.summarizer import DeepSeekSummarizer

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = "The city opened a new library on Friday. Hundreds of readers queued before dawn. " * 5


@pytest.fixture()
def patched(monkeypatch, summarizer):
    """from_pretrained returns the already loaded tiny summarizer; records what it was asked for."""
    calls = []

    def fake(path, load=None):
        calls.append((str(path), load))
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


def test_experts_implementation_reaches_the_loader(patched, article, capsys, tiny_model_dir):
    code = infer.main(["--model_path", str(tiny_model_dir), "--input_file", str(article), "--max_length", "2",
                       "--experts_implementation", "eager"])
    assert code == 0 and patched == [(str(tiny_model_dir), LoadSettings(experts_implementation="eager"))]


def test_text_file_json_output(patched, article, capsys, summarizer, tiny_model_dir):
    code = infer.main(["--model_path", str(tiny_model_dir), "--input_file", str(article), "--max_length", "3",
                       "--json", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and patched == [(str(tiny_model_dir), LoadSettings(device="cpu"))]
    assert out["input"] == str(article) and out["pages"] == 1 and out["vision_tokens"] == 64
    assert out["summary"] == summarizer.summarize_text(ARTICLE, max_length=3).summary


def decoded(summarizer, rows: list[list[int]]) -> list[str]:
    """The summaries of generated token rows, as the backend writes them."""
    return [text.strip() for text in summarizer.backend.processor.batch_decode(rows)]


@pytest.mark.parametrize("argv", [["-"], []], ids=["dash", "piped"])
def test_text_from_stdin(patched, monkeypatch, capsys, argv, tiny_model_dir, summarizer, generated):
    set_stdin(monkeypatch, ARTICLE.encode())
    assert infer.main(["--model_path", str(tiny_model_dir), "--max_length", "2", *argv]) == 0
    assert [len(row) for row in generated] == [2]
    assert capsys.readouterr().out == decoded(summarizer, generated)[0] + "\n"


@pytest.mark.parametrize("flag", ["--max_length", "--max_new_tokens"])
def test_the_limit_bounds_the_generated_tokens(patched, article, capsys, tiny_model_dir, summarizer, generated, flag):
    for limit in (2, 7):  # the folder's own limit is 4
        assert infer.main(["--model_path", str(tiny_model_dir), "--input_file", str(article), "--json",
                           flag, str(limit)]) == 0
        assert [len(row) for row in generated] == [limit]
        assert json.loads(capsys.readouterr().out)["summary"] == decoded(summarizer, generated)[0]
        generated.clear()


def test_images_and_pdf(patched, tmp_path, capsys, tiny_model_dir):
    images = []
    for index, fmt in enumerate(["PNG", "JPEG"]):
        images.append(tmp_path / f"page{index}.{fmt.lower()}")
        Image.new("RGB", (120, 90), "white").save(images[-1], format=fmt)
    assert infer.main(["--model_path", str(tiny_model_dir), "--image_path", *map(str, images), "--max_length", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 2 and str(images[1]) in out
    pdf = tmp_path / "doc.pdf"
    Image.new("RGB", (100, 60), "white").save(pdf, resolution=72)
    assert infer.main(["--model_path", str(tiny_model_dir), "--pdf_path", str(pdf), "--dpi", "72", "--json", "--max_length", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["pages"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--input_file", "missing.txt"], "input file not found: missing.txt"),
    (["--image_path", "missing.png"], "image file not found: missing.png"),
    (["--pdf_path", "missing.pdf"], "pdf file not found: missing.pdf"),
    (["--input_file", "{bad_text}"], "not valid UTF-8"),
    (["--image_path", "{bad_image}"], "not a readable image"),
    (["--input_file", "{article}", "--max_length", "0"], "argument --max_new_tokens/--max_length: input should be greater than or equal to 1, got 0"),
    (["--input_file", "{article}", "--num_beams", "99"], "argument --num_beams: input should be less than or equal to 16, got 99"),
    (["--input_file", "{article}", "--gguf", "m.gguf"], "argument --gguf names a file for the llamacpp engine, but argument --engine is 'torch'"),
])
def test_input_errors_are_one_line(patched, tmp_path, article, capsys, argv, message, tiny_model_dir):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    paths = {"bad_text": tmp_path / "bad.txt", "bad_image": tmp_path / "bad.png", "article": article}
    argv = [a.format(**paths) for a in argv]
    assert infer.main(["--model_path", str(tiny_model_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_model_and_no_input(monkeypatch, article, capsys, tiny_model_dir):
    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert infer.main(["--input_file", str(article)]) == 2
    assert "no model" in capsys.readouterr().err
    set_stdin(monkeypatch, b"", tty=True)
    assert infer.main(["--model_path", str(tiny_model_dir)]) == 2
    assert "no input" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [
    ("{tmp}/nowhere", "model folder not found: {tmp}/nowhere"),
    ("./nonexistent", "model folder not found: ./nonexistent"),  # a path, not a hub id to download
    ("{article}", "is a file; pass the model folder"),
    ("{tmp}", "is not a model folder: it has no config.json"),
    ("no-such-preset", "is neither a preset (tiny-random, tiny-random-ocr2, tiny-random-bart), an existing folder, nor a hub id"),
    ("{broken}", "cannot load seq2seq model"),  # a BART config.json without weights
])
def test_unloadable_model_is_one_line(tmp_path, article, capsys, name, message):
    broken = tmp_path / "broken-bart"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bart", "is_encoder_decoder": true}')
    name, message = (text.format(tmp=tmp_path, article=article, broken=broken) for text in (name, message))
    assert infer.main(["--model_path", name, "--input_file", str(article)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.slow  # a fresh interpreter loads the model
def test_readme_command_in_a_subprocess(tiny_model_dir, article, summarizer):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inference.infer", "--model_path", str(tiny_model_dir),
               "--input_file", str(article), "--max_length", "3"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    # The seeded tiny model gives the same greedy summary in any process (empty, too, if it ends at once).
    assert done.stdout == summarizer.summarize_text(ARTICLE, max_length=3).summary + "\n"
    assert "Traceback" not in done.stderr
    missing = subprocess.run(command[:5] + ["--image_path", "nope.png"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=120)
    assert missing.returncode == 2 and missing.stderr == "error: image file not found: nope.png\n"
