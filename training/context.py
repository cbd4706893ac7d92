"""The decoder's context in training: no sequence longer than it ever reaches the model.

A DeepSeek-OCR training sequence is BOS, the document (its pages' placeholders, or its first `max_source_length`
text tokens), the instruction, then the summary cut to `max_length` tokens and its EOS; the context is the
model's `max_position_embeddings`. The rule:
- a record whose sequence is longer than the context is left out before training, training and validation
  records alike, and counted: one line at the start of the run, the model card and `TrainResult.over_context`.
  Its pages are never cut (the model would learn to summarize what it did not read) and its summary is never cut
  below `max_length` (a summary clipped because its document is long would teach the model that long documents
  get clipped summaries, and the record would be a different example from its neighbours);
- text input is refused up front when `max_source_length` + `max_length` + the prompt's own positions exceed the
  context, rather than clamped: the text arm's reading length is the experiment's variable, so it is the user's
  to change, and once it fits no text record can be longer than the context;
- the collator checks every batch against the context all the same, so a sequence past it is a bug that stops
  the run, never a silent overrun.
"""
from __future__ import annotations

from typing import Callable, Sequence

from config import ConfigError, TrainingConfig

SPLIT_NAMES = {"train": "training", "val": "validation"}


def check_text_input(cfg: TrainingConfig, context: int, fixed: int) -> None:
    """Refuse text-input settings whose longest sequence cannot fit `context`; `fixed`: the prompt's positions
    besides its document (BOS and the instruction)."""
    if cfg.input_mode != "text":
        return
    longest = cfg.max_source_length + cfg.max_length + fixed
    if longest > context:
        raise ConfigError(f"config key 'max_source_length' ({cfg.max_source_length}) and config key 'max_length' "
                          f"({cfg.max_length}) with the prompt's {fixed} other positions make {longest}, more than "
                          f"the decoder's context of {context}: lower them to add up to {context - fixed} at most")


def within_context(records: Sequence[dict], length: Callable[[dict], int], context: int) -> tuple[list[dict], int]:
    """(the records whose sequence, `length(record)` positions, fits `context`, in order; how many do not)."""
    kept = [record for record in records if length(record) <= context]
    return kept, len(records) - len(kept)


def over_context_line(over: dict[str, int], totals: dict[str, int], context: int, max_length: int) -> str:
    """The one line that reports the records left out; `totals`: the records of each split before."""
    counts = " and ".join(f"{over[split]} of {totals[split]} {SPLIT_NAMES[split]}" for split in over if totals[split])
    return (f"left out {counts} records longer than the decoder's context of {context} positions (BOS, pages, "
            f"instruction and a summary of up to {max_length} tokens with its EOS); their pages are never cut")
