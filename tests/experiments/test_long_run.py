"""The long-document smoke experiment end to end, offline, on synthetic long documents (bundled-long): the test
document outgrows tiny-random's 4,096-position context, so each arm reads it another way (pages by fit, pages in
windows, text truncated, text in windows with the text arm's model), and the table says what the predictions say."""
import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.run import main
from tests.experiments.test_report import _cells

REPO = Path(__file__).resolve().parents[2]
LONG = REPO / "configs" / "experiments" / "smoke-long-cpu.json"
# Two records a split: a long document of 16 abstracts and a short one of 4 (the only one that trains the pixels
# arms: training leaves out what exceeds the context); the one test document is the long one.
ARGS = ["long.json", "--output-dir", "experiment", "--max-samples", "2", "--test-samples", "1", "--max-steps", "1"]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("long")
    data = json.loads(LONG.read_text())
    # Validation keeps the config's 2 records: the long one is left out, as from training.
    data["training"].update(batch_size=1, eval_steps=1)
    data["bootstrap"] = 100
    (work / "long.json").write_text(json.dumps(data))
    printed = io.StringIO()
    with contextlib.chdir(work), contextlib.redirect_stdout(printed):
        code = main(ARGS)
    assert code == 0, printed.getvalue()
    out = work / "experiment"
    results = json.loads((out / "results.json").read_text())
    return SimpleNamespace(out=out, results=results, arms={arm["name"]: arm for arm in results["arms"]},
                           table=(out / "results.md").read_text())


def _prediction(long_run, arm: str) -> dict:
    [line] = (long_run.out / "arms" / arm / "predictions.jsonl").read_text().splitlines()
    return json.loads(line)


@pytest.mark.slow
def test_every_arm_reads_the_long_document_as_its_settings_say(long_run):
    [reference] = [json.loads(line) for line in (long_run.out / "data" / "references.jsonl").read_text().splitlines()]
    assert reference["synthetic"] is True and reference["id"].endswith("-x16")
    assert long_run.results["dataset"]["synthetic"] is True and "**synthetic** documents" in long_run.table
    fit = _prediction(long_run, "pixels-small-36px")
    assert (fit["strategy"], fit["read_mode"], fit["pages_read"]) == ("fit", "tiny", fit["pages"])
    assert fit["tokens_read"] < fit["document_tokens"] and fit["prompt_tokens"] + 32 <= fit["context"] == 4096
    windows = _prediction(long_run, "pixels-tiny-36px")
    assert windows["strategy"] == "hierarchical" and windows["windows"] > 1 and windows["levels"] > 1
    assert windows["pages_read"] == windows["pages"] and windows["tokens_read"] > 4096
    cut = _prediction(long_run, "text")
    assert cut["strategy"] == "truncate" and cut["tokens_read"] <= 1024 < cut["document_tokens"]
    whole = _prediction(long_run, "text-hierarchical")
    assert whole["strategy"] == "hierarchical" and whole["windows"] > 1
    assert whole["tokens_read"] == whole["document_tokens"] == cut["document_tokens"]


@pytest.mark.slow
def test_the_table_columns_hold_what_the_predictions_say(long_run):
    for name in ("pixels-small-36px", "pixels-tiny-36px", "text", "text-hierarchical"):
        line, cells, row = _prediction(long_run, name), _cells(long_run.table, name), long_run.arms[name]
        share = line["pages_read"] / line["pages"] if line["pages"] else line["tokens_read"] / line["document_tokens"]
        assert cells["share read"] == f"{share:.2f}" and row["reading"]["mean_share_read"] == round(share, 4), name
        assert cells["windows"] == f"{line['windows']:.1f}", name
        assert cells["pages read"] == (f"{line['pages_read']:.1f}/{line['pages']:.1f}" if line["pages"] else "-")
        assert f"read 1 {line['strategy']}" in cells["reads"], name
        repetition = json.loads((long_run.out / "arms" / name / "metrics.json").read_text())["systems"]["model"] \
            .get("repetition")
        assert cells["loop share"] == (f"{repetition['loop_share']:.2f}" if repetition else "-"), name
        assert cells["rep-4"] == (f"{repetition['repeated_ngram_rate']:.3f}" if repetition else "-"), name
    text = long_run.arms["text"]
    assert float(_cells(long_run.table, "text")["share read"]) < 1 and text["truncated_documents"] == 1
    assert "1 docs cut to 1024 tokens" in _cells(long_run.table, "text")["reads"] and text["compression_ratio"] > 1
    assert float(_cells(long_run.table, "pixels-tiny-36px")["windows"]) > 1
    assert long_run.arms["text-hierarchical"]["truncated_documents"] == 0


@pytest.mark.slow
def test_the_hierarchical_text_arm_generates_with_the_text_arms_model_and_trains_nothing(long_run):
    stages = {json.loads(p.read_text())["stage"] for p in (long_run.out / "stages").glob("*.json")}
    assert "train/text" in stages and "generate/text-hierarchical" in stages
    assert not any(stage.startswith("train/text-hierarchical") for stage in stages)
    assert not (long_run.out / "arms" / "text-hierarchical" / "model").exists()
    model = long_run.out / "arms" / "text" / "model"
    settings = json.loads((long_run.out / "arms" / "text-hierarchical" / "predictions.jsonl.settings.json").read_text())
    assert long_run.out.parent / settings["model"] == model  # the experiment's folder is relative to its run
    # The text arm's folder still decodes as its own predictions were made.
    assert json.loads((model / "generation_settings.json").read_text())["long_documents"] == "truncate"
    row = long_run.arms["text-hierarchical"]
    assert row["model_of"] == "text" and row["train_seconds"] is None and row["max_source_length"] == 1024


@pytest.mark.slow
def test_lead_n_is_the_first_n_sentences_scored_like_a_model(long_run):
    from evaluation.metrics import lead_n

    [reference] = [json.loads(line) for line in (long_run.out / "data" / "references.jsonl").read_text().splitlines()]
    assert _prediction(long_run, "lead-16")["prediction"] == lead_n(reference["text"], 16)
    metrics = json.loads((long_run.out / "arms" / "lead-16" / "metrics.json").read_text())
    assert long_run.arms["lead-16"]["scores"] == metrics["systems"]["model"]["scores"]
    assert long_run.arms["lead-16"]["reads"] == "first 16 sentences" and long_run.arms["lead-16"]["reading"] is None
