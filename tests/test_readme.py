"""The README is the user contract: its commands, flags, config and imports must work as written.

- every `python -m MODULE --flag ...` command in a bash block uses only flags that MODULE's --help lists;
- the JSON configuration block loads as a TrainingConfig;
- the `from X import Y` checks of the Development section import;
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
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """`python -m ...` commands of the bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("python -m "):
                commands.append(shlex.split(line))
    return commands


COMMANDS = _commands()


def test_readme_has_the_reference_workflow():
    modules = {cmd[2] for cmd in COMMANDS}
    assert {"data.prepare_datasets", "training.train", "evaluation.generate", "evaluation.evaluate",
            "inference.infer", "inference.api_server", "data.publish_hf_datasets"} <= modules


@pytest.mark.parametrize("module", sorted({cmd[2] for cmd in COMMANDS if any(a.startswith("--") for a in cmd)}))
def test_every_flag_in_the_readme_exists(module):
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert help_text.returncode == 0, help_text.stderr
    flags = {arg.split("=")[0] for cmd in COMMANDS if cmd[2] == module for arg in cmd if arg.startswith("--")}
    missing = sorted(flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", help_text.stdout))
    assert not missing, f"README uses flags that {module} does not have: {missing}"


def test_readme_config_block_loads():
    configs = [json.loads(body) for lang, body in BLOCKS if lang == "json" and '"model_name"' in body]
    assert configs
    for data in configs:
        cfg = from_dict(TrainingConfig, data)
        assert cfg.optimizer.learning_rate == data["optimizer"]["learning_rate"]


def test_development_imports_work():
    imports = re.findall(r'python -c "(from \w+ import \w+); print', README)
    assert len(imports) == 4
    for statement in imports:
        proc = subprocess.run([sys.executable, "-c", statement], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, f"{statement}: {proc.stderr[-500:]}"


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
