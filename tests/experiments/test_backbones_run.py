"""The two-backbone smoke experiment end to end, offline: an arm's "backbone" trains and generates with
DeepSeek-OCR-2, and the table shows each backbone's vision tokens for the same pages."""
import contextlib
import io
import json
from pathlib import Path

import pytest

from experiments.run import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "experiments" / "smoke-v1-vs-v2-cpu.json"


@pytest.mark.slow
def test_a_deepseek_ocr2_arm_runs_beside_a_deepseek_ocr_arm(tmp_path):
    printed = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(printed):
        code = main([str(CONFIG), "--output-dir", "experiment", "--max-samples", "8", "--test-samples", "4",
                     "--max-steps", "2"])
    assert code == 0, printed.getvalue()
    arms = {arm["name"]: arm for arm in json.loads((tmp_path / "experiment" / "results.json").read_text())["arms"]}
    trained = json.loads((tmp_path / "experiment" / "arms" / "v2-small-12px" / "model" / "config.json").read_text())
    assert trained["model_type"] == "deepseek_ocr2"
    # The same small pages: 100 vision tokens for DeepSeek-OCR's 640 px view, 144 for DeepSeek-OCR-2's 768.
    predictions = {name: [json.loads(line) for line in
                          (tmp_path / "experiment" / "arms" / name / "predictions.jsonl").read_text().splitlines()]
                   for name in ("v1-small-12px", "v2-small-12px")}
    assert {p["vision_tokens"] / p["pages"] for p in predictions["v1-small-12px"]} == {100}
    assert {p["vision_tokens"] / p["pages"] for p in predictions["v2-small-12px"]} == {144}
    assert arms["v2-small-12px"]["vision_tokens"] > arms["v1-small-12px"]["vision_tokens"]
