"""The README and docs/ are the user contract: their commands, flags, config and examples must work as written.

- every `python -m MODULE --flag ...` command of this project, in a bash block or an inline command of README.md
  or docs/*.md (also after environment assignments and under torchrun / accelerate launch), uses only flags that
  MODULE's --help lists;
- the JSON configuration block loads as a TrainingConfig;
- the `python -c "from X import Y"` checks of the Development section import, from a folder outside the
  repository (the project is installed, `pip install -e .`);
- every Python example of README.md runs as written, in a fresh interpreter in a temporary working folder that
  holds the files the examples open (article.txt, document.png, and the tiny-random model at ./deepseek-summarizer),
  and so does every Python example of docs/ that needs no other engine (vLLM, llama.cpp);
- the first command (demo.sh, the smoke experiment end to end, then the API) runs at small sizes.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from config import TrainingConfig, from_dict
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((REPO / "docs").glob("*.md"))}
TEXTS = {"README.md": README, **DOCS}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
BLOCKS = FENCE.findall(README)
# The project's packages: commands of other programs (vLLM, SGLang, pytest) are not checked here.
PACKAGES = {"config", "data", "evaluation", "model", "inference", "training", "experiments", "benchmarks"}
LAUNCHERS = {"python", "python3", ".venv/bin/python", "torchrun", "accelerate"}


def _segments(line: str) -> list[list[str]]:
    """A shell line as simple commands (split at |, &&, ;), each a list of words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments, words = [], []
    for token in lexer:
        if token and set(token) <= set("|&;<>()"):
            segments.append(words)
            words = []
        else:
            words.append(token)
    return [*segments, words]


def _command(words: list[str]):
    """(module, arguments) of a `python -m MODULE ...` command of this project, else None."""
    if "-m" not in words or not any(w in LAUNCHERS for w in words[:words.index("-m")]):
        return None
    at = words.index("-m")
    if at + 1 >= len(words) or words[at + 1].split(".")[0] not in PACKAGES:
        return None
    return words[at + 1], words[at + 2:]


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """The project's `python -m` commands of a Markdown text: in bash blocks (continuation lines joined, comments
    dropped) and in inline code spans."""
    lines = []
    for lang, body in FENCE.findall(text):
        if lang == "bash":
            lines += [line.split(" #")[0].strip() for line in body.replace("\\\n", " ").splitlines()
                      if not line.lstrip().startswith("#")]
    prose = FENCE.sub("", text)
    lines += [span for span in re.findall(r"`([^`\n]+)`", prose) if re.search(r"\bpython3? -m \w", span)]
    commands = []
    for line in lines:
        for words in _segments(line):
            found = _command(words)
            if found:
                commands.append(found)
    return commands


COMMANDS = {name: _commands(text) for name, text in TEXTS.items()}
ALL_COMMANDS = [(name, module, args) for name, found in COMMANDS.items() for module, args in found]


def test_readme_has_the_reference_workflow():
    modules = {module for module, _ in COMMANDS["README.md"]}
    assert {"data.prepare_datasets", "training.train", "evaluation.generate", "evaluation.evaluate",
            "inference.infer", "inference.api_server", "model.export", "experiments.run"} <= modules
    for section in ("## Setup", "## Prepare a dataset", "## Train", "## Evaluate", "## Inference", "## API server"):
        assert re.search(rf"^{section}\b", README, flags=re.M), section


def test_commands_are_found_in_the_docs_too():
    """The extraction sees what the docs show: inline commands, launchers, environment assignments."""
    found = {(name, module) for name, module, _ in ALL_COMMANDS}
    assert ("docs/training.md", "training.train") in found  # under torchrun
    assert ("docs/export-and-engines.md", "inference.api_server") in found  # after MODEL_PATH=... ENGINE=...
    assert ("docs/evaluation.md", "evaluation.generate") in found
    assert _command(shlex.split("torchrun --nproc_per_node 4 -m evaluation.generate d.jsonl --model m")) == \
        ("evaluation.generate", ["d.jsonl", "--model", "m"])
    assert _command(shlex.split("python3 -m sglang.launch_server --port 1")) is None


FLAGGED = sorted({module for _, module, args in ALL_COMMANDS if any(a.startswith("--") for a in args)})


@pytest.mark.parametrize("module", FLAGGED)
def test_every_flag_in_the_readme_and_docs_exists(module):
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert help_text.returncode == 0, help_text.stderr
    used = {(arg.split("=")[0], name) for name, found, args in ALL_COMMANDS if found == module
            for arg in args if arg.startswith("--")}
    missing = sorted(f"{flag} ({name})" for flag, name in used
                     if not re.search(rf"{re.escape(flag)}(?![\w-])", help_text.stdout))
    assert not missing, f"the docs use flags that {module} does not have: {missing}"


def test_readme_config_block_loads():
    configs = [json.loads(body) for lang, body in BLOCKS if lang == "json" and '"model_name"' in body]
    assert configs
    for data in configs:
        cfg = from_dict(TrainingConfig, data)
        assert cfg.optimizer.learning_rate == data["optimizer"]["learning_rate"]


@pytest.mark.slow  # a fresh interpreter per import
def test_development_imports_work(tmp_path):
    imports = re.findall(r'python -c "(from \w+ import \w+); print', README)
    assert len(imports) == 4
    for statement in imports:  # from another folder: the installed project, not the working directory
        proc = subprocess.run([sys.executable, "-c", statement], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, f"{statement}: {proc.stderr[-500:]}"


def _python_examples() -> list[tuple[str, str]]:
    examples = [("README.md", body) for lang, body in BLOCKS if lang == "python"]
    for name, text in DOCS.items():  # docs' examples of other engines need those engines and a GPU or a GGUF
        examples += [(name, body) for lang, body in FENCE.findall(text)
                     if lang == "python" and not re.search(r"vllm|sglang|llamacpp", body)]
    return examples


EXAMPLES = _python_examples()


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """A working folder with what the examples open: an article, a page image, and a tiny model folder at the
    paths the examples load (the `tiny-random` preset, saved as training saves a model)."""
    from config import GenerationSettings, RenderConfig, save_run_settings
    from data.text_to_image import TextToImageConverter
    from model.checkpoint.convert import load_model
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("examples")
    record = json.loads((REPO / "data" / "bundled" / "scitldr-a" / "test.jsonl").open().readline())
    article = " ".join(record["source"])
    (folder / "article.txt").write_text(article, encoding="utf-8")
    TextToImageConverter(mode="tiny").render(article).pages[0].save(folder / "document.png")
    model = folder / "deepseek-summarizer"
    load_model("tiny-random").save_pretrained(model)
    DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode("tiny")).save_pretrained(model)
    save_run_settings(model, RenderConfig(mode="tiny"), GenerationSettings(max_new_tokens=8))
    (model / "training_config.json").write_text(json.dumps({"task": "deepseek-ocr"}), encoding="utf-8")
    for path in {p for _, body in EXAMPLES for p in re.findall(r'from_pretrained\(\s*"(\./[^"]+)"', body)}:
        if not (folder / path).exists():
            (folder / path).symlink_to(model, target_is_directory=True)
    return folder


def test_the_readme_has_python_examples():
    assert sum(name == "README.md" for name, _ in EXAMPLES) >= 1


@pytest.mark.slow  # a fresh interpreter per example, most loading a model
@pytest.mark.parametrize("source, code", EXAMPLES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(EXAMPLES)])
def test_python_examples_run_as_written(source, code, example_folder):
    proc = subprocess.run([sys.executable, "-c", code], cwd=example_folder, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, f"{source} example failed:\n{code}\n{proc.stderr[-2000:]}"


@pytest.mark.slow
def test_first_command_runs_the_main_job_end_to_end(tmp_path):
    """README's first command at small sizes: the smoke experiment (every arm) -> serve + curl."""
    first = re.search(r"```bash\n# 1\..*?\n(.+?)\n", README).group(1).strip()
    assert first == "bash demo.sh"
    env = {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "DEMO_SAMPLES": "4", "DEMO_STEPS": "2",
           "DEMO_TEST": "3", "DEMO_PORT": str(free_port())}
    proc = subprocess.run(["bash", "demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "demo"
    results = json.loads((out / "results.json").read_text())
    assert {arm["type"] for arm in results["arms"]} == {"pixels", "text", "seq2seq", "lead-3"}
    assert all(arm["documents"] == 3 for arm in results["arms"])
    assert len((out / "arms" / "pixels-12px" / "predictions.jsonl").read_text().splitlines()) == 3
    assert "rougeLsum" in (out / "arms" / "pixels-12px" / "metrics.json").read_text()
    response = json.loads((out / "api_response.json").read_text())
    assert isinstance(response["summary"], str) and response["pages"] >= 1
    assert response["vision_tokens"] == 64 * response["pages"]  # tiny mode: 64 vision tokens a page
    assert response["model"] == str(out / "arms" / "pixels-12px" / "model")
    card = (out / "arms" / "pixels-12px" / "model" / "README.md").read_text()
    assert "DeepSeek-OCR (page images → summary)" in card and "eval_loss" in card
    from PIL import Image

    with Image.open(out / "rouge_vs_compression.png") as plot:
        assert plot.format == "PNG" and plot.width > 500
    table = (out / "results.md").read_text()
    for arm in results["arms"]:  # every arm's row carries the ROUGE-1 of its own metrics
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm['name']} |"))
        assert f"{arm['scores']['rouge1']:.2f}" in row
    assert "not summary quality" in proc.stdout
