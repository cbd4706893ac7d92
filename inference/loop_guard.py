"""The loop guard: no n-gram of tokens occurs twice in a summary (GenerationSettings.no_repeat_ngram_size), within
its last `no_repeat_ngram_window` tokens where that is set. One logits processor for every engine: torch's
`generate` runs it in its processor list, the llama.cpp engine's TokenPicker runs it on llama.cpp's logits.

Why not transformers' own NoRepeatNGramLogitsProcessor: on a decoder-only model it counts the prompt's n-grams
too, and DeepSeek-OCR's prompt holds the instruction and, for a model that reads text, the document itself, so it
forbids a summary from quoting any three tokens of its source. This guard looks at the summary's tokens alone, as
the official DeepSeek-OCR recipe's vLLM processor does (it sees only the generated tokens), whose window it also
offers (n-gram 30 within 90 tokens there). Which default holds loops off: benchmarks.bench_loop_guard and
docs/evaluation.md.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

# The generation keyword arguments the guard reads; backends take them out before calling `generate`.
SIZE, WINDOW = "no_repeat_ngram_size", "no_repeat_ngram_window"


class SummaryNGramBlock(LogitsProcessor):
    """Forbids each token that would complete an n-gram already in the summary (the tokens after the first
    `prompt_length` of each row), or in its last `window` tokens when `window` > 0."""

    def __init__(self, size: int, prompt_length: int, window: int = 0):
        if size < 1 or prompt_length < 0 or window < 0:
            raise ValueError(f"n-gram size {size}, prompt length {prompt_length}, window {window}")
        self.size, self.prompt_length, self.window = size, prompt_length, window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        summary = input_ids[:, self.prompt_length:]
        if self.window:
            summary = summary[:, -self.window:]
        if summary.shape[1] < self.size:  # no complete n-gram yet
            return scores
        # The next token completes an n-gram that starts with the summary's last size-1 tokens; each earlier n-gram
        # with that prefix bans its own last token.
        prefix = summary[:, summary.shape[1] + 1 - self.size:]
        grams = summary.unfold(dimension=1, size=self.size, step=1)
        rows, starts = (grams[..., :-1] == prefix.unsqueeze(1)).all(dim=-1).nonzero(as_tuple=True)
        tokens = grams[rows, starts, -1]
        inside = tokens < scores.shape[-1]  # ids beyond the logits (the model cannot emit them) need no ban
        if not inside.any():  # the usual step: nothing to copy a whole vocabulary's scores for
            return scores
        scores = scores.clone()
        scores[rows[inside], tokens[inside]] = -float("inf")
        return scores


def guard(generate_kwargs: dict, prompt_length: int) -> LogitsProcessorList:
    """The guard's processors for the generation keyword arguments' settings and prompts of `prompt_length`
    positions (an empty list when it is off)."""
    size, window = generate_kwargs.get(SIZE) or 0, generate_kwargs.get(WINDOW) or 0
    return LogitsProcessorList([SummaryNGramBlock(size, prompt_length, window)] if size else [])


def without_guard(generate_kwargs: dict) -> dict:
    """The generation keyword arguments for transformers, the guard's taken out. Its own n-gram block is turned
    off, so a model's generation_config.json (bart-large-cnn sets 3) cannot add it behind the settings' back."""
    kwargs = {key: value for key, value in generate_kwargs.items() if key != WINDOW}
    kwargs[SIZE] = 0
    return kwargs


def guarded(generate_kwargs: dict, prompt_length: int) -> dict:
    """Keyword arguments for transformers' `generate`: the settings', the guard in the processor list in place of
    transformers' own n-gram block."""
    return {**without_guard(generate_kwargs), "logits_processor": guard(generate_kwargs, prompt_length)}
