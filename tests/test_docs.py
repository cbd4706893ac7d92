"""The documentation stays short, inside the repository, and free of figures that belong to benchmark results.

- README.md reads in five minutes (at most 300 lines) and every relative link of README.md and docs/*.md names a
  file of this repository;
- dated measurements live in benchmarks/results/, never in README.md or docs/;
- the smoke experiment's seconds per step and per document have one source: the config's `estimate` block equals
  the figures of the smoke run it names (benchmarks/results/smoke_cpu.json), and the docs restate none of them;
- `python -m benchmarks.run_all` writes its report where --output says and leaves the README alone.
"""
import json
import re
import sys
import types
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
SMOKE_CONFIG = REPO / "configs" / "experiments" / "smoke-cpu.json"
SMOKE_RESULTS = REPO / "benchmarks" / "results" / "smoke_cpu.json"


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_links_stay_inside_the_repository():
    for page in [*PAGES, REPO / "pyproject.toml", REPO / "training" / "README.md"]:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{page.name}: broken link {target}"


def test_no_dated_figures_in_the_readme_or_docs():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{page.name} holds a dated figure"
        assert not re.search(r"[Mm]easured (on|20\d\d)", text), f"{page.name} holds a measurement"
        assert not re.search(r"\d\s*s(/| per )step", text), f"{page.name} restates seconds per step"


def test_smoke_estimate_is_the_smoke_run():
    estimate = json.loads(SMOKE_CONFIG.read_text(encoding="utf-8"))["estimate"]
    assert SMOKE_RESULTS.relative_to(REPO).as_posix() in estimate["measured_on"]
    arms = json.loads(SMOKE_RESULTS.read_text(encoding="utf-8"))["arms"]
    assert {arm["type"] for arm in arms} >= {"pixels", "text", "seq2seq"}
    deepseek = [arm["step_seconds"] for arm in arms if arm["type"] in ("pixels", "text")]
    seq2seq = [arm["step_seconds"] for arm in arms if arm["type"] == "seq2seq"]
    per_doc = [arm["generation_seconds_per_document"] for arm in arms if arm["generation_seconds_per_document"]]
    assert estimate["train_step_s"] == round(mean(deepseek), 3)
    assert estimate["seq2seq_step_s"] == round(mean(seq2seq), 3)
    assert estimate["generate_doc_s"] == round(mean(per_doc), 3)
    for page in PAGES:  # no page restates them
        text = page.read_text(encoding="utf-8")
        for value in (estimate["train_step_s"], estimate["seq2seq_step_s"], estimate["generate_doc_s"]):
            assert not re.search(rf"(?<![\d.]){re.escape(str(value))}(?![\d])", text), (page.name, value)


def test_run_all_writes_its_report_and_not_the_readme(tmp_path, monkeypatch, capsys):
    from benchmarks import run_all

    fake = types.ModuleType("fake_bench")
    fake.run = lambda quick: [{"setting": "a", "seconds": 1.0}]
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    monkeypatch.setattr(run_all, "BENCHMARKS", {"fake": ("A fake benchmark", "fake_bench")})
    readme = README.read_text(encoding="utf-8")
    output = tmp_path / "latest.md"
    assert run_all.main(["--quick", "--output", str(output)]) == 0
    report = output.read_text(encoding="utf-8")
    assert "**A fake benchmark**" in report and "| a | 1.0 |" in report and "Machine:" in report
    assert README.read_text(encoding="utf-8") == readme
    assert not hasattr(run_all, "update_readme")
