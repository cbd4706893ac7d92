"""The loop guard (inference/loop_guard.py): which tokens it bans (against transformers' own processor on the
summary's tokens), that the tiny-random preset loops without it and does not with the default settings (torch,
the API; the llama.cpp engine: tests/inference/test_llamacpp_engine.py), and how saved settings keep theirs."""
import json
from pathlib import Path

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor

from config import GenerationSettings, LoadSettings
from config.artifacts import GENERATION_SETTINGS_FILE, load_run_settings
from evaluation.repetition import loops
from inference.loop_guard import SummaryNGramBlock, guard, without_guard

BUNDLED = Path(__file__).resolve().parents[2] / "data/bundled/scitldr-a/test.jsonl"
DOCUMENTS = 6  # the first bundled test documents: enough to loop without a guard, few enough for the fast lane
WINDOW = 6  # a window so short that the tiny model's loops (longer than it) come round again


def bundled_texts(count=DOCUMENTS):
    with open(BUNDLED, encoding="utf-8") as lines:
        return [" ".join(json.loads(next(lines))["source"]) for _ in range(count)]


def banned(processor, ids):
    scores = processor(torch.tensor(ids), torch.zeros(len(ids), 10))
    return [sorted(torch.nonzero(row.isinf()).flatten().tolist()) for row in scores]


def test_an_ngram_of_the_summary_cannot_repeat_but_one_of_the_prompt_can():
    prompt = [7, 8, 9, 5]  # the prompt's "7 8 9" would ban 9 after "7 8" if the prompt counted
    assert banned(SummaryNGramBlock(3, prompt_length=4), [prompt + [1, 2, 3, 1, 2]]) == [[3]]
    assert banned(SummaryNGramBlock(3, prompt_length=4), [prompt + [7, 8]]) == [[]]
    assert banned(NoRepeatNGramLogitsProcessor(3), [prompt + [7, 8]]) == [[9]]  # transformers' counts the prompt
    assert banned(SummaryNGramBlock(1, prompt_length=2), [[5, 5, 1, 4, 2]]) == [[1, 2, 4]]  # unigrams: no token twice


def test_the_window_forgets_older_ngrams():
    ids = [[1, 2, 3, 4, 5, 6, 1, 2]]  # "1 2 3" lies 6 tokens back
    assert banned(SummaryNGramBlock(3, prompt_length=0), ids) == [[3]]
    assert banned(SummaryNGramBlock(3, prompt_length=0, window=8), ids) == [[3]]
    assert banned(SummaryNGramBlock(3, prompt_length=0, window=7), ids) == [[]]  # "1 2 3" starts outside


def test_rows_are_guarded_apart_and_equal_transformers_processor_on_the_summary():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        ids = torch.randint(0, 4, (3, 30), generator=generator)
        scores = torch.randn(3, 10, generator=generator)
        expected = NoRepeatNGramLogitsProcessor(3)(ids[:, 6:], scores.clone())
        assert torch.equal(SummaryNGramBlock(3, prompt_length=6)(ids, scores.clone()), expected)


def test_the_guard_replaces_transformers_block_in_the_generate_arguments():
    kwargs = {"max_new_tokens": 8, "no_repeat_ngram_size": 4, "no_repeat_ngram_window": 90}
    assert without_guard(kwargs) == {"max_new_tokens": 8, "no_repeat_ngram_size": 0}  # none behind the settings
    block, = guard(kwargs, prompt_length=12)
    assert (block.size, block.prompt_length, block.window) == (4, 12, 90)
    assert not guard({**kwargs, "no_repeat_ngram_size": 0}, 12) and not guard({"max_new_tokens": 8}, 12)


@pytest.fixture(scope="module")
def tiny():
    from inference.summarizer import DeepSeekSummarizer

    return DeepSeekSummarizer.from_pretrained("tiny-random", LoadSettings(device="cpu", dtype="float32"))


def test_tiny_random_loops_without_the_guard_and_not_with_the_default(tiny):
    """The goal: with default settings no summary of the tiny model repeats a word 4-gram three times (all 618
    bundled test documents, both engines: benchmarks/results/loop_guard.md)."""
    assert tiny.generation == GenerationSettings()  # a preset decodes with the defaults
    unguarded = tiny.summarize_text(bundled_texts(), no_repeat_ngram_size=0)
    assert sum(loops(result.summary) for result in unguarded) >= DOCUMENTS // 2
    guarded = tiny.summarize_text(bundled_texts())
    assert [result.summary for result in guarded if loops(result.summary)] == []


def test_the_api_guards_by_default_and_a_request_may_turn_it_off(tiny):
    from inference.api_server import create_app
    from inference.api_settings import ServerSettings

    client = create_app(tiny, ServerSettings(batch_wait_ms=0)).test_client()
    text = bundled_texts(1)[0]
    guarded = client.post("/summarize/text", json={"text": text})
    unguarded = client.post("/summarize/text", json={"text": text, "no_repeat_ngram_size": 0})
    assert guarded.status_code == unguarded.status_code == 200
    assert not loops(guarded.json["summary"]) and loops(unguarded.json["summary"])
    windowed = client.post("/summarize/text", json={"text": text, "no_repeat_ngram_window": WINDOW})
    assert windowed.status_code == 200 and loops(windowed.json["summary"])  # the window reaches the engine


def test_a_folder_saved_with_the_guard_off_keeps_it_off(tmp_path):
    """A folder trained before the guard was on by default saved its 0 explicitly, without the window: it keeps
    decoding as it did, and a request (or the flag) turns the guard on."""
    from inference.summarizer import DeepSeekSummarizer

    (tmp_path / GENERATION_SETTINGS_FILE).write_text(json.dumps({
        "max_new_tokens": 128, "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0, "temperature": 0.0,
        "long_documents": "auto", "batch_size": 4, "compile": False}), encoding="utf-8")
    saved = load_run_settings(tmp_path)[1]
    assert saved == GenerationSettings(no_repeat_ngram_size=0)
    summarizer = DeepSeekSummarizer(None, None, saved, "old-folder")
    assert summarizer.generation_settings().no_repeat_ngram_size == 0
    assert summarizer.generation_settings(no_repeat_ngram_size=3).no_repeat_ngram_size == 3
