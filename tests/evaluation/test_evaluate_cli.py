"""python -m evaluation.evaluate: figures equal rouge-score called directly, Lead-3, counted problems, errors."""
import json
import subprocess
import sys
from pathlib import Path

import pysbd
import pytest
from rouge_score import rouge_scorer

from evaluation.evaluate import main

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "data" / "bundled" / "scitldr-a" / "test.jsonl"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
SEGMENTER = pysbd.Segmenter(language="en", clean=False)
SCORER = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)


def sentences(text):
    return [s.strip() for s in SEGMENTER.segment(text) if s.strip()]


def direct(predictions, references):
    """Mean F1 x100 from rouge-score with the stated settings, independent of the evaluation package."""
    lines = lambda text: text if "\n" in text else "\n".join(sentences(text))  # noqa: E731
    totals = dict.fromkeys(TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        best = SCORER.score_multi([lines(r) for r in refs], lines(prediction))
        for metric in TYPES:
            totals[metric] += best[metric].fmeasure
    return {m: 100 * v / len(predictions) for m, v in totals.items()}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def assert_same(scores, expected):
    for metric in TYPES:
        assert scores[metric] == pytest.approx(expected[metric], abs=0.005), metric  # equal to the 2nd decimal


@pytest.fixture(scope="module")
def scitldr(tmp_path_factory):
    rows = [json.loads(line) for line in BUNDLED.read_text(encoding="utf-8").splitlines()[:10]]
    records = [{"id": r["paper_id"], "text": " ".join(r["source"]), "summary": r["target"][0],
                "references": r["target"]} for r in rows]
    predictions = [{"id": r["paper_id"], "prediction": " ".join(s.strip() for s in r["source"][-2:]),
                    "vision_tokens": 64, "pages": 1} for r in rows]
    folder = tmp_path_factory.mktemp("scitldr")
    return records, predictions, write_jsonl(folder / "test.jsonl", records), write_jsonl(folder / "pred.jsonl",
                                                                                          predictions)


def run(*args):
    return main([*map(str, args), "--workers", "1", "--bootstrap", "100"])


def test_model_and_lead3_equal_direct_computation(scitldr, tmp_path, capsys):
    records, predictions, refs_path, preds_path = scitldr
    out, per_example, plot = tmp_path / "metrics.json", tmp_path / "pe.jsonl", tmp_path / "plot.png"
    assert run(refs_path, preds_path, "--output", out, "--baseline", "lead-3", "--per-example", per_example,
               "--plot", plot) == 0
    metrics = json.loads(out.read_text())
    references = [r["references"] for r in records]
    assert_same(metrics["systems"]["model"]["scores"], direct([p["prediction"] for p in predictions], references))
    leads = ["\n".join(sentences(r["text"])[:3]) for r in records]
    assert_same(metrics["systems"]["lead-3"]["scores"], direct(leads, references))
    assert metrics["counts"] == {"examples": 10, "missing_predictions": 0, "empty_predictions": 0}
    assert metrics["settings"]["use_stemmer"] is True and "score_multi" in metrics["settings"]["multi_reference"]
    assert metrics["versions"]["rouge-score"] == "0.1.2"
    assert metrics["compression"]["vision_tokens"]["mean"] == 64
    rows = [json.loads(line) for line in per_example.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records] and rows[0]["status"] == "ok"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "ROUGE-Lsum" in table and "lead-3" in table and "model" in table


def test_cnn_style_highlights_keep_newlines(tmp_path):
    records = [
        {"id": "a", "text": "The storm reached the coast on Monday. Thousands lost power. Schools were closed. "
                            "Officials urged calm.", "summary": "", "references": [
            "Storm reaches coast on Monday.\nThousands without power.\nSchools closed."],
         "render": {"pages": 1, "text_tokens": 300, "vision_tokens": 100, "compression_ratio": 3.0}},
        {"id": "b", "text": "Police chased a car for an hour. The driver was armed. Nobody was hurt. He was charged.",
         "summary": "", "references": ["Police chase armed driver.\nNobody hurt.\nDriver charged with theft."],
         "render": {"pages": 2, "text_tokens": 900, "vision_tokens": 200, "compression_ratio": 4.5}},
    ]
    predictions = [{"id": "a", "prediction": "Schools were closed. The storm hit the coast and thousands lost power."},
                   {"id": "b", "prediction": "Nobody was hurt. The armed driver was charged after a police chase."}]
    out = tmp_path / "m.json"
    assert run(write_jsonl(tmp_path / "t.jsonl", records), write_jsonl(tmp_path / "p.jsonl", predictions),
               "--output", out) == 0
    scores = json.loads(out.read_text())["systems"]["model"]["scores"]
    assert_same(scores, direct([p["prediction"] for p in predictions], [r["references"] for r in records]))
    assert abs(scores["rougeL"] - scores["rougeLsum"]) > 1
    compression = json.loads(out.read_text())["compression"]
    assert compression["overall_ratio"] == pytest.approx(1200 / 300)  # render stats used, not re-counted


def test_problems_are_counted_and_missing_scores_as_empty(scitldr, tmp_path):
    records, predictions, refs_path, _ = scitldr
    lines = [json.dumps(predictions[0]), json.dumps({**predictions[0], "prediction": "duplicate"}),
             json.dumps({**predictions[1], "prediction": "  "}), "{not json", "[1, 2]",
             json.dumps({"id": predictions[2]["id"]}), json.dumps({"id": "unknown", "prediction": "x"}),
             *(json.dumps(p) for p in predictions[3:8])]
    preds_path = tmp_path / "p.jsonl"
    preds_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.json"
    assert run(refs_path, preds_path, "--output", out) == 0
    metrics = json.loads(out.read_text())
    assert metrics["counts"] == {"examples": 10, "duplicate_prediction_ids": 1, "unreadable_prediction_lines": 3,
                                 "unmatched_predictions": 1, "missing_predictions": 3, "empty_predictions": 1}
    assert len(metrics["problems"]) == 5
    scored = [predictions[0]["prediction"], "  ", "", *(p["prediction"] for p in predictions[3:8]), "", ""]
    assert_same(metrics["systems"]["model"]["scores"], direct(scored, [r["references"] for r in records]))


def test_baseline_without_predictions(scitldr, tmp_path):
    out = tmp_path / "new" / "folder" / "lead.json"  # made as needed, like the other commands' outputs
    assert run(scitldr[2], "--baseline", "lead-3", "--output", out) == 0
    assert list(json.loads(out.read_text())["systems"]) == ["lead-3"]


def test_bad_input_is_one_line_and_non_zero(scitldr, tmp_path, capsys):
    unmatched = write_jsonl(tmp_path / "p.jsonl", [{"id": "nope", "prediction": "x"}])
    assert run(scitldr[2], unmatched, "--output", tmp_path / "m.json") == 2
    assert run(tmp_path / "absent.jsonl", unmatched) == 2
    err = capsys.readouterr().err
    assert "no prediction id" in err and "cannot read reference file" in err and "Traceback" not in err
    assert run(scitldr[2]) == 2  # neither predictions nor a baseline
    assert "give a PREDICTIONS file" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_module_entry_point_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "evaluation.evaluate", str(tmp_path / "absent.jsonl"),
                             "--baseline", "lead-3"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = subprocess.run([sys.executable, "-m", "evaluation.evaluate", "--help"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0 and "--baseline" in result.stdout


def test_command_is_the_stage_function_with_the_readme_flags(scitldr, tmp_path, capsys):
    """Every README flag reaches the EvaluateJob that `evaluate` takes: the command's metrics equal the function's."""
    from config.jobs import EvaluateJob
    from evaluation.evaluate import evaluate

    _, _, refs_path, preds_path = scitldr
    out = tmp_path / "cli.json"
    assert main([refs_path, preds_path, "--output", str(out), "--baseline", "lead-3", "--workers", "1",
                 "--bootstrap", "50", "--precision-recall", "--seed", "7"]) == 0
    job = EvaluateJob(references=refs_path, predictions=preds_path, output=str(tmp_path / "fn.json"),
                      baseline="lead-3", workers=1, bootstrap=50, precision_recall=True, seed=7)
    returned = evaluate(job)
    assert returned == json.loads((tmp_path / "fn.json").read_text())
    from_cli = json.loads(out.read_text())
    assert from_cli["systems"] == returned["systems"]
    assert "precision" in from_cli["systems"]["model"] and from_cli["settings"]["bootstrap"]["seed"] == 7
    assert from_cli["settings"]["bootstrap"]["resamples"] == 50


@pytest.mark.parametrize("flags, message", [
    (["--bootstrap", "-1"], "argument --bootstrap: input should be greater than or equal to 0, got -1"),
    (["--workers", "0"], "argument --workers: input should be greater than or equal to 1, got 0"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--baseline", "lead-4"], "argument --baseline: invalid choice: 'lead-4'"),
])
def test_bad_flags_are_one_line_usage_errors(scitldr, capsys, flags, message):
    try:
        status = main([scitldr[2], "--baseline", "lead-3", *flags])
    except SystemExit as stop:  # argparse's own checks (types, choices) end the parse
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_each_system_reports_its_repetition_and_the_table_shows_it(tmp_path, capsys):
    records = [{"id": str(i), "text": f"Document {i} is here. It has words. It ends now.", "summary": "A summary."}
               for i in range(4)]
    loop = "the model loops here " * 3  # "the model loops here" 3 times: a loop; 4 distinct 4-grams of 9
    predictions = [{"id": "0", "prediction": loop}, {"id": "1", "prediction": "a fine summary of the paper"},
                   {"id": "2", "prediction": "short one"}]  # id 3 missing: scored as "", which does not loop
    out = tmp_path / "m.json"
    assert run(write_jsonl(tmp_path / "t.jsonl", records), write_jsonl(tmp_path / "p.jsonl", predictions),
               "--output", out, "--baseline", "lead-3") == 0
    systems = json.loads(out.read_text())["systems"]
    model = systems["model"]["repetition"]
    assert model["looping"] == 1 and model["loop_share"] == 0.25
    assert model["repeated_ngram_rate"] == round((1 - 4 / 9 + 0) / 2, 4)  # the two summaries with a 4-gram
    assert "4-gram occurs 3+ times" in model["definition"]
    assert systems["lead-3"]["repetition"]["looping"] == 0 and systems["lead-3"]["repetition"]["loop_share"] == 0
    table = capsys.readouterr().out.splitlines()
    loops_row = next(line for line in table if line.startswith("loops %"))
    rep_row = next(line for line in table if line.startswith("rep-4 %"))
    assert loops_row.split()[-4:] == ["25.00", "(1)", "0.00", "(0)"]  # model, lead-3
    assert rep_row.split()[-2] == f"{100 * round((1 - 4 / 9) / 2, 4):.2f}"


def reading_fields(strategy, pages, pages_read, tokens_read, document_tokens, windows=1, levels=1):
    return {"strategy": strategy, "windows": windows, "levels": levels, "pages": pages, "pages_read": pages_read,
            "tokens_read": tokens_read, "document_tokens": document_tokens, "read_mode": None,
            "prompt_tokens": 100, "context": 8192}


def test_reading_block_summarizes_how_the_documents_were_read(tmp_path, capsys):
    records = [{"id": str(i), "text": "One sentence. Two sentences.", "summary": "A summary."} for i in range(4)]
    fields = [reading_fields("direct", 2, 2, 200, 200),  # pixels, read whole: share 1
              reading_fields("truncate", 4, 1, 100, 400),  # pixels, first page of 4: share 0.25
              reading_fields("hierarchical", 6, 6, 600, 600, windows=3, levels=2),  # share 1
              reading_fields("truncate", 0, 0, 50, 200)]  # a text reader: 50 of 200 tokens, share 0.25
    predictions = [{"id": str(i), "prediction": "a summary", **f} for i, f in enumerate(fields)]
    out = tmp_path / "m.json"
    assert run(write_jsonl(tmp_path / "t.jsonl", records), write_jsonl(tmp_path / "p.jsonl", predictions),
               "--output", out) == 0
    reading = json.loads(out.read_text())["reading"]
    assert reading["documents"] == 4
    assert reading["strategies"] == {"direct": 1, "truncate": 2, "hierarchical": 1}
    assert reading["mean_windows"] == (1 + 1 + 3 + 1) / 4 and reading["mean_levels"] == 5 / 4
    assert reading["mean_pages"] == 3 and reading["mean_pages_read"] == 9 / 4
    assert reading["mean_share_read"] == (1 + 0.25 + 1 + 0.25) / 4
    assert reading["truncated"] == 2
    assert "reading: direct 1, truncate 2, hierarchical 1; mean windows 1.5, mean share read 0.625, truncated 2" \
        in capsys.readouterr().out


def test_reading_is_null_for_predictions_without_its_fields(scitldr, tmp_path):
    _, _, refs_path, preds_path = scitldr  # lines with pages and vision tokens only, as older files have
    out = tmp_path / "m.json"
    assert run(refs_path, preds_path, "--output", out) == 0
    assert json.loads(out.read_text())["reading"] is None
    assert run(refs_path, "--baseline", "lead-3", "--output", out) == 0
    assert json.loads(out.read_text())["reading"] is None
