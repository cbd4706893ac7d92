"""evaluate_pairs against rouge-score called directly with the stated settings, bootstrap, Lead-N, statistics."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysbd
import pytest
from rouge_score import rouge_scorer

from evaluation.metrics import ROUGE_TYPES, bootstrap_intervals, compression_stats, evaluate_pairs, lead_n, length_stats

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "bundled" / "scitldr-a" / "test.jsonl"
SEGMENTER = pysbd.Segmenter(language="en", clean=False)
SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def one_sentence_per_line(text):
    return text if "\n" in text else "\n".join(s.strip() for s in SEGMENTER.segment(text) if s.strip())


def direct(predictions, references):
    """Mean F1 x100 per metric straight from rouge-score, written independently of evaluation.metrics."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else refs
        best = SCORER.score_multi([one_sentence_per_line(r) for r in refs], one_sentence_per_line(prediction))
        for metric in ROUGE_TYPES:
            totals[metric] += best[metric].fmeasure
    return {m: 100 * v / len(predictions) for m, v in totals.items()}


@pytest.fixture(scope="module")
def scitldr():
    records = [json.loads(line) for line in BUNDLED.read_text(encoding="utf-8").splitlines()[:16]]
    # Two source sentences joined by a space: multi-sentence predictions with no newline, so pysbd matters.
    predictions = [" ".join(s.strip() for s in r["source"][:2]) for r in records]
    return predictions, [r["target"] for r in records], [" ".join(r["source"]) for r in records]


@pytest.fixture(scope="module")
def scitldr_result(scitldr):
    predictions, references, _ = scitldr
    return evaluate_pairs(predictions, references, workers=1, bootstrap=200, seed=3, return_per_example=True)


def test_scores_equal_direct_rouge_score(scitldr, scitldr_result):
    expected = direct(*scitldr[:2])
    for metric in ROUGE_TYPES:
        assert scitldr_result["scores"][metric] == pytest.approx(expected[metric], abs=1e-3)
    assert scitldr_result["settings"]["use_stemmer"] is True
    assert "pysbd" in scitldr_result["settings"]["sentence_split"]


def test_newline_references_kept_and_rougeL_differs_from_rougeLsum():
    highlights = ["Police arrest a man after a chase.\nThe suspect was armed.\nNo one was hurt in the incident.",
                  "Storm hits the coast on Monday.\nThousands lose power.\nSchools closed."]
    predictions = ["No one was hurt. Police arrested the armed suspect after a long chase.",
                   "Schools are closed. A storm hit the coast and thousands lost power on Monday."]
    result = evaluate_pairs(predictions, highlights, workers=1, bootstrap=0)
    expected = direct(predictions, highlights)
    for metric in ROUGE_TYPES:
        assert result["scores"][metric] == pytest.approx(expected[metric], abs=1e-3)
    assert abs(result["scores"]["rougeL"] - result["scores"]["rougeLsum"]) > 1
    assert "intervals" not in result



def test_rougeLsum_takes_the_reference_lines_as_its_sentences():
    # CNN/DailyMail highlights: one per line, no final punctuation, so only the newlines mark the sentences.
    highlights = "Storm hits the coast on Monday\nThousands lose power\nSchools closed across the county"
    # One unpunctuated sentence holding every highlight, in another order.
    prediction = "schools closed across the county thousands lose power storm hits the coast on monday"
    scores = evaluate_pairs([prediction], [highlights], workers=1, bootstrap=0)["scores"]
    # Each line is a subsequence of the prediction: the union LCS covers every token of both texts. Read as one
    # sentence, the reference shares only its longest in-order run with the prediction (rougeL).
    assert scores["rougeLsum"] == pytest.approx(100)
    assert scores["rougeL"] < 60


def test_rougeLsum_never_splits_a_reference_line_that_holds_two_sentences():
    # Text with newlines is already one sentence per line: its first line holds two sentences and stays one.
    reference = "The storm hit the coast. Thousands lost power.\nSchools closed."
    prediction = "Thousands lost power as the storm hit the coast"  # one sentence, spanning both of line one
    score = evaluate_pairs([prediction], [reference], workers=1, bootstrap=0)["scores"]["rougeLsum"]
    # rouge-score's own summary-level LCS over the lines exactly as written (no splitter involved) ...
    as_written = SCORER.score(reference, prediction)["rougeLsum"].fmeasure
    # ... and over the lines a re-split would make: a different figure, so the check can tell the two apart.
    resplit = SCORER.score(reference.replace(". ", ".\n", 1), prediction)["rougeLsum"].fmeasure
    assert score == pytest.approx(100 * as_written, abs=1e-3)
    assert abs(as_written - resplit) > 0.2


def test_multi_reference_takes_best_per_metric():
    prediction = "the cat sat on the mat near the door"
    refs = ["a dog barked loudly at night", "the cat sat on the mat", "cat mat door near"]
    multi = evaluate_pairs([prediction], [refs], workers=1, bootstrap=0)["scores"]
    singles = [evaluate_pairs([prediction], [r], workers=1, bootstrap=0)["scores"] for r in refs]
    for metric in ROUGE_TYPES:
        assert multi[metric] == pytest.approx(max(s[metric] for s in singles))


def test_parallel_equals_serial(scitldr, scitldr_result):
    predictions, references, _ = scitldr
    parallel = evaluate_pairs(predictions, references, workers=2, bootstrap=200, seed=3, return_per_example=True)
    assert parallel == scitldr_result


def test_bootstrap_interval_contains_estimate_and_is_deterministic(scitldr_result):
    for metric in ROUGE_TYPES:
        low, high = scitldr_result["intervals"][metric]
        assert low <= scitldr_result["scores"][metric] <= high
        assert low < high
    values = np.random.default_rng(1).random((500, 3))
    first, again = bootstrap_intervals(values, 300, seed=7), bootstrap_intervals(values, 300, seed=7)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, bootstrap_intervals(values, 300, seed=8))
    assert np.all((first[:, 0] <= values.mean(axis=0)) & (values.mean(axis=0) <= first[:, 1]))


def test_precision_recall_and_empty_predictions():
    result = evaluate_pairs(["the cat sat", "", "   "], ["the cat sat on the mat", "a b", "c d"], workers=1,
                            bootstrap=50, with_precision_recall=True)
    assert result["precision"]["rouge1"] == pytest.approx(100 / 3, abs=1e-3)  # 3/3 for one example of three
    assert result["recall"]["rouge1"] == pytest.approx(50 / 3, abs=1e-3)
    assert set(result["precision_intervals"]) == set(ROUGE_TYPES)
    assert result["counts"]["empty_predictions"] == 2
    with pytest.raises(ValueError):
        evaluate_pairs(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        evaluate_pairs(["a"], [[]])


def test_lead_n_is_first_sentences_of_the_splitter(scitldr):
    _, _, sources = scitldr
    long_text = " ".join(sources[:6])  # several thousand characters: the prefix search must not change sentences
    for text in [*sources[:4], long_text, "One sentence only."]:
        sentences = [s.strip() for s in SEGMENTER.segment(text) if s.strip()]
        assert lead_n(text) == "\n".join(" ".join(s.split()) for s in sentences[:3])
    assert lead_n("") == ""
    assert lead_n(long_text, n=1).count("\n") == 0



def test_lead_n_when_the_third_sentence_crosses_the_search_prefix():
    # Cut inside "(vs. ... i.e. ...)", pysbd splits the third sentence's start off as if it were a sentence.
    first, third = "The first sentence is short.", \
        "Growth was 2.5 percent (vs. 1.9 percent in 2019, i.e. a rise) according to the report."
    prefix = 1600  # lead_n's first search prefix for n=3
    cuts = []
    for pad in range(0, len(third), 4):
        second = "The second sentence runs on" + " and on" * ((prefix - len(first) - 40 - pad) // 7) + " to its end."
        head = f"{first} {second} "
        text = head + third + " The fourth sentence follows. " + "Filler sentences come after it. " * 60
        cuts.append(prefix - len(head))
        lead = lead_n(text).splitlines()
        assert lead[0] == first and lead[2] == third, f"cut {cuts[-1]} characters into the third sentence"
        assert lead[1].startswith("The second sentence runs on and on") and lead[1].endswith(" to its end.")
    assert min(cuts) <= 8 and max(cuts) >= len(third) - 8  # the cut swept across the whole third sentence


def test_length_and_compression_stats():
    lengths = length_stats(["one two three", "four five"], count_tokens=lambda t: 2 * len(t.split()))
    assert lengths["words"]["mean"] == 2.5 and lengths["tokens"]["max"] == 6
    stats = compression_stats([1000, 600, 300], [100, 200, None], [1, 2, None])
    assert stats["overall_ratio"] == pytest.approx(1600 / 300, abs=1e-3)
    assert stats["ratio_per_document"]["median"] == pytest.approx(6.5)
    assert stats["documents_with_vision_tokens"] == 2 and stats["pages"]["count"] == 2


def test_evaluation_imports_neither_torch_nor_transformers(tmp_path):
    """Scoring stays below the model in the layers: importing the package and its modules, and scoring a file
    end to end (token counts, Lead-3, the plot), loads neither library."""
    references = tmp_path / "refs.jsonl"
    references.write_text(json.dumps({"id": "a", "text": "The storm hit. Power failed. Schools shut. Calm returned.",
                                      "summary": "Storm hit.\nSchools shut."}) + "\n", encoding="utf-8")
    code = ("import sys, evaluation, evaluation.evaluate, evaluation.metrics, evaluation.report\n"
            "from evaluation import evaluate_pairs\n"
            "from config.jobs import EvaluateJob\n"
            f"evaluation.evaluate.evaluate(EvaluateJob(references={str(references)!r}, baseline='lead-3', "
            f"output={str(tmp_path / 'm.json')!r}, plot={str(tmp_path / 'p.png')!r}, bootstrap=10))\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "m.json").is_file()
