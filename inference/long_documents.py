"""Long documents: no sequence ever runs past the decoder's context.

A generation call reads a prompt (BOS, the document's page placeholders or text tokens, the instruction) and
writes up to `max_new_tokens`; both must fit the decoder's `max_position_embeddings` (a seq2seq baseline: its
source must fit its encoder). A document that does not is read as `GenerationSettings.long_documents` says:
- fit: its pages read at the next lower resolution mode (fewer tokens per page: config.modes.MODE_DOWN), as far
  as its text stays at least config.modes.MIN_LEGIBLE_FONT_PX high; a model that reads text cannot fit;
- hierarchical: consecutive windows of pages (or of text tokens) that each fit, all summarized together; the
  window summaries, joined, are then read like a new document (rendered to pages for a model that reads pages,
  the form it was trained on) and summarized the same way, level after level;
- truncate: the first pages (or text tokens) that fit;
- error: a LongDocumentError naming the pages, tokens and context;
- auto: as is when it fits, else fit, else hierarchical.
`plan` decides one level's readings; the summarizer generates them and runs the levels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from config.modes import MIN_LEGIBLE_FONT_PX, MODE_DOWN, RESOLUTION_MODES
from inference.backends import Budget, Document
from inference.inputs import InputError

# Levels of summaries of summaries before giving up: each level must shorten the text, and one that does not
# (summaries as long as their windows) would never end.
MAX_LEVELS = 4
# Text windows end this many tokens short of the room: a window's text tokenized on its own may take a token or
# two more at its edges than it did inside the whole text.
TEXT_MARGIN = 4


class LongDocumentError(InputError):
    """A document that cannot be read within the decoder's context as asked; one line for the user."""


@dataclass
class Plan:
    """How one document is read at one level: its readings (one generation prompt each) and what they cover."""

    strategy: str  # "direct" (as it is), "fit", "hierarchical" or "truncate"
    readings: list[Document]
    tokens: int  # document positions of the whole document as read at its own mode (text readers: text tokens)
    tokens_read: int  # document positions the readings take in all
    pages_read: int = 0  # pages the readings cover (text readers: 0)
    read_mode: Optional[str] = None  # the resolution mode pages are read at, where fit changed it
    longest_prompt: int = 0  # positions of the longest reading's prompt, BOS and instruction included


def plan(doc: Document, backend, new_tokens: int, strategy: str, font_size: int) -> Plan:
    """The readings of `doc` by `backend` when each may write `new_tokens`; `font_size`: the text height of its
    pages (the model's render settings')."""
    budget = backend.budget(new_tokens)
    if backend.reads_images:
        return _plan_pages(doc, backend, budget, strategy, font_size)
    return _plan_text(doc, backend, budget, strategy)


def _refusal(pages: Optional[int], tokens: int, budget: Budget, advice: str) -> LongDocumentError:
    what = f"{pages} pages ({tokens} positions)" if pages is not None else f"{tokens} text tokens"
    return LongDocumentError(f"a document of {what} does not fit: the model reads at most {budget.room} positions "
                             f"of a document beside a summary of {budget.new_tokens} tokens (context "
                             f"{budget.context}); {advice}")


def _windows(costs: list[int], room: int) -> list[list[int]]:
    """Consecutive indices grouped so that each group's costs sum to at most `room` (each cost fits alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for index, cost in enumerate(costs):
        if groups[-1] and total + cost > room:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += cost
    return groups


def _views(mode: str) -> Optional[tuple[int, bool]]:
    """DeepSeek-OCR's (global view side, tiled) of a mode."""
    geometry = RESOLUTION_MODES[mode]
    return geometry.base_size, geometry.crop_mode


def legible_modes(own: str, page_side: int, font_size: int,
                  views: Callable[[str], Optional[tuple[int, bool]]] = _views) -> list[str]:
    """The modes below `own`, nearest first, at which the text of a page (its longer side `page_side` pixels) stays
    legible, taking its text to be `font_size` high as `own` reads it: true of pages rendered from text, and
    assumed of images and PDFs, which the model reads as it reads its own pages. `views(mode)`: the backbone's
    global view side and whether it tiles, None for a mode it does not read."""
    side, tiled = views(own)
    # A tiled mode reads the page at full size in its tiles; the others see it shrunk to their view.
    seen = page_side if tiled else side
    modes, mode = [], own
    while mode in MODE_DOWN:
        mode = MODE_DOWN[mode]
        view = views(mode)
        if view is None or font_size * view[0] / seen < MIN_LEGIBLE_FONT_PX:
            break
        modes.append(mode)
    return modes


def _plan_pages(doc: Document, backend, budget: Budget, strategy: str, font_size: int) -> Plan:
    costs = [backend.page_positions(page) for page in doc.pages]
    total = sum(costs)
    if total <= budget.room:
        return Plan("direct", [doc], total, total, len(costs), longest_prompt=total + budget.fixed)
    if strategy == "error":
        raise _refusal(len(costs), total, budget, "set long_documents to fit, hierarchical or truncate")
    if strategy in ("auto", "fit"):
        for mode in legible_modes(backend.mode, max(doc.pages[0].size), font_size, backend.views):
            fitted = sum(backend.page_positions(page, mode) for page in doc.pages)
            if fitted <= budget.room:
                return Plan("fit", [dataclasses.replace(doc, read_mode=mode)], total, fitted, len(costs), mode,
                            fitted + budget.fixed)
        if strategy == "fit":
            raise _refusal(len(costs), total, budget, "not even at the lowest resolution mode that keeps its text "
                           "legible; set long_documents to hierarchical or truncate")
    if max(costs) > budget.room:
        raise _refusal(1, max(costs), budget, "one page alone is too large: lower max_new_tokens")
    groups = _windows(costs, budget.room)[:1 if strategy == "truncate" else None]
    readings = [Document([doc.pages[i] for i in group]) for group in groups]
    read = [sum(costs[i] for i in group) for group in groups]
    return Plan("truncate" if strategy == "truncate" else "hierarchical", readings, total, sum(read),
                sum(map(len, groups)), longest_prompt=max(read) + budget.fixed)


def _plan_text(doc: Document, backend, budget: Budget, strategy: str) -> Plan:
    spans = backend.text_spans(doc.text)  # (start, end) character offsets of each token
    total = len(spans)
    if total <= budget.room:
        return Plan("direct", [doc], total, total, longest_prompt=total + budget.fixed)
    if strategy == "error":
        raise _refusal(None, total, budget, "set long_documents to hierarchical or truncate")
    if strategy == "fit":
        raise _refusal(None, total, budget, "a model that reads text cannot read it denser: set long_documents "
                       "to hierarchical or truncate")
    step = max(budget.room - TEXT_MARGIN, 1)
    starts = range(0, total, step)[:1 if strategy == "truncate" else None]
    readings = [Document(text=doc.text[spans[start][0]:spans[min(start + step, total) - 1][1]],
                         text_tokens=min(step, total - start)) for start in starts]
    read = [reading.text_tokens for reading in readings]
    return Plan("truncate" if strategy == "truncate" else "hierarchical", readings, total, sum(read),
                longest_prompt=max(read) + budget.fixed)
