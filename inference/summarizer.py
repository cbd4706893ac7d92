"""`DeepSeekSummarizer`: load a summarizer folder, turn text / images / PDFs into pages, generate summaries.

Text is rendered with the render settings saved in the model folder, so inference sees the pages training saw.
The model is used by one thread at a time (a lock around generation); the API server adds micro-batching on top.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from config import GenerationSettings, LoadSettings, RenderConfig
from config.settings import Engine
from inference.backends import Document, Seq2SeqBackend, torch_backend
from inference.inputs import (
    DEFAULT_PDF_DPI,
    ImageSource,
    InputError,
    InputTooLarge,
    PdfSource,
    apply_generation_params,
    load_image,
    load_pdf,
)
from inference.long_documents import MAX_LEVELS, LongDocumentError, Plan, plan
from inference.loop_guard import WINDOW


@dataclass
class SummaryResult:
    summary: str
    pages: int
    vision_tokens: Optional[int]  # None for the seq2seq baseline, which reads text
    text_tokens: Optional[int]  # known for text inputs only
    compression_ratio: Optional[float]  # text_tokens / vision_tokens, where both are known
    seconds: float  # wall time of the generation batches this document was part of
    # How the decoder read it within its context (inference/long_documents.py): "direct" (whole, as it is), "fit"
    # (pages at a lower mode), "hierarchical" (windows, then their summaries) or "truncate" (what fit first).
    strategy: str = "direct"
    windows: int = 1  # readings of the document itself: its windows, else 1
    levels: int = 1  # summarizing rounds (hierarchical: the windows', then their summaries' ...)
    pages_read: int = 0  # pages the first round read (fewer than `pages` when truncated)
    tokens_read: int = 0  # the document positions (page placeholders or text tokens) the first round read
    document_tokens: int = 0  # the positions of the whole document as its reader reads it at its own mode
    read_mode: Optional[str] = None  # the resolution mode pages were read at, where fit changed it
    prompt_tokens: int = 0  # the longest prompt of any round, in positions: with the summary, within `context`
    context: Optional[int] = None  # the model's context, in positions

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def figures(self) -> dict:
        """Everything but the summary (a predictions line's fields beside its `prediction`)."""
        return {key: value for key, value in self.to_dict().items() if key != "summary"}


@dataclass
class _Job:
    """One document through its reading levels: the first level's plan is what its result reports."""

    document: Document
    plan: Plan
    summary: str = ""
    seconds: float = 0.0
    levels: int = 1

    def __post_init__(self) -> None:
        self.first = self.plan
        self.longest_prompt = self.plan.longest_prompt

    def next_level(self, plan: Plan) -> None:
        self.plan, self.levels = plan, self.levels + 1
        self.longest_prompt = max(self.longest_prompt, plan.longest_prompt)


class DeepSeekSummarizer:
    """Summaries of text, images and PDFs with a fine-tuned DeepSeek-OCR (or the seq2seq baseline)."""

    def __init__(self, backend, render: RenderConfig, generation: GenerationSettings, name: str,
                 max_pages: Optional[int] = None, max_pixels: Optional[int] = None):
        self.backend = backend
        self.render_config = render
        self.generation = generation
        self.name = name
        self.max_pages = max_pages  # inputs with more pages are refused (InputTooLarge)
        self.max_pixels = max_pixels  # per image or PDF page; decompression-bomb guard
        self._converters: dict = {}  # by page cap
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path_or_hub_id: Union[str, Path], load: Optional[LoadSettings] = None,
                        engine: Optional[Engine] = None, **limits) -> "DeepSeekSummarizer":
        """Any model source (model/checkpoint/source.py): a folder written by this project's training
        (DeepSeek-OCR or seq2seq), an exported or official folder, a hub id, or a preset. `load`: device (CUDA if
        available, else CPU), precision (auto by default), kernels and engine; `engine` ("torch" or "llamacpp",
        for a folder exported with `--format gguf`) overrides `load.engine`; `limits`: max_pages, max_pixels."""
        load = load or LoadSettings()
        if engine is not None:
            load = LoadSettings(**{**dataclasses.asdict(load), "engine": engine})  # validated like every setting
        if load.engine == "llamacpp":  # llama.cpp's decoder behind this project's encoder
            from inference.llamacpp_engine import load_llamacpp

            backend, loaded = load_llamacpp(str(path_or_hub_id), load)
        else:
            backend, loaded = torch_backend(str(path_or_hub_id), load)
        return cls(backend, loaded.render, loaded.generation, str(path_or_hub_id), **limits)

    # ------------------------------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def model_type(self) -> str:
        return "seq2seq" if isinstance(self.backend, Seq2SeqBackend) else "deepseek-ocr"

    @property
    def engine(self) -> Engine:
        return self.backend.engine

    @property
    def gguf(self) -> Optional[str]:
        """The llamacpp engine's GGUF decoder file name; None on torch."""
        return self.backend.gguf

    def generation_settings(self, **params) -> GenerationSettings:
        """The folder's settings with overrides (see `inputs.GENERATION_PARAMS`), validated."""
        return apply_generation_params(self.generation, **params)

    # ------------------------------------------------------------------------------------------ inputs

    def _converter(self, max_pages: Optional[int]):
        """The renderer with the folder's settings; a page cap changes no pixel, so pages match training."""
        if max_pages not in self._converters:
            from data.text_to_image import TextToImageConverter

            render = self.render_config
            if max_pages is not None:
                render = dataclasses.replace(render, max_pages=min(render.max_pages or max_pages, max_pages))
            self._converters[max_pages] = TextToImageConverter(render)
        return self._converters[max_pages]

    def prepare_text(self, text: str, max_pages: Optional[int] = None) -> Document:
        """Text rendered to pages (limits: the arguments, else the summarizer's)."""
        from data.text_to_image import RenderError
        from data.tokens import count_text_tokens

        if not isinstance(text, str) or not text.strip():
            raise InputError("text is missing or empty")
        if not self.backend.reads_images:
            return Document(text=text, text_tokens=count_text_tokens(text))
        try:
            with self._render_lock:  # the converters' glyph and word caches are not meant for threads
                rendered = self._converter(max_pages or self.max_pages).render(text)
        except RenderError as err:
            raise (InputTooLarge if "max_pages" in str(err) else InputError)(str(err)) from None
        return Document(rendered.pages, text, rendered.text_tokens)

    def prepare_image(self, source: ImageSource, max_pixels: Optional[int] = None) -> Document:
        self._require_images()
        return Document([load_image(source, max_pixels or self.max_pixels)])

    def prepare_pdf(self, source: PdfSource, dpi: int = DEFAULT_PDF_DPI, max_pixels: Optional[int] = None,
                    max_pages: Optional[int] = None) -> Document:
        self._require_images()
        return Document(load_pdf(source, dpi, max_pixels or self.max_pixels, max_pages or self.max_pages))

    def _require_images(self) -> None:
        if not self.backend.reads_images:
            raise InputError("this model is text-only (a seq2seq baseline, or DeepSeek-OCR trained on text "
                             "input); it cannot read images or PDFs")

    # ------------------------------------------------------------------------------------------ summarizing

    def summarize_documents(self, documents: Sequence[Document],
                            settings: Optional[GenerationSettings] = None) -> list[SummaryResult]:
        """Summaries of prepared documents, each read within the model's context as `settings.long_documents`
        says; the readings of all documents (the windows of one document among them) generate together,
        `settings.batch_size` at a time."""
        settings = settings or self.generation
        jobs = [_Job(doc, self.plan(doc, settings)) for doc in documents]
        active = list(jobs)
        while active:
            summaries = iter(self._generate([reading for job in active for reading in job.plan.readings], settings))
            waiting = []
            for job in active:
                outputs = [next(summaries) for _ in job.plan.readings]
                # The wall time of each batch its windows were in, once: windows of one document share batches.
                job.seconds += sum({batch: seconds for _, seconds, batch in outputs}.values())
                texts = [text for text, *_ in outputs]
                if len(texts) == 1 or not any(text.strip() for text in texts):
                    job.summary = texts[0] if len(texts) == 1 else ""  # empty windows: nothing to go on
                    continue
                job.next_level(self.plan(self._summaries_as_document(texts, job), settings))
                waiting.append(job)
            active = waiting
        return [self._result(job) for job in jobs]

    def plan(self, doc: Document, settings: GenerationSettings) -> Plan:
        """How `doc` is read within the model's context under `settings` (a LongDocumentError when it cannot be)."""
        return plan(doc, self.backend, settings.max_new_tokens, settings.long_documents,
                    self.render_config.font_size)

    def _summaries_as_document(self, summaries: list[str], job: "_Job") -> Document:
        """The next level's document: the window summaries joined, read as the model reads documents."""
        if job.levels >= MAX_LEVELS:
            raise LongDocumentError(f"the summaries of a {len(job.document.pages) or job.document.text_tokens}-"
                                    f"{'page' if job.document.pages else 'token'} document still did not fit after "
                                    f"{MAX_LEVELS} levels: lower max_new_tokens")
        return self.prepare_text("\n\n".join(summary for summary in summaries if summary.strip()))

    def _generate(self, readings: list[Document], settings: GenerationSettings) -> list[tuple[str, float, int]]:
        """Each reading's summary, the wall time of its batch and the batch's number; batches hold readings of one
        resolution mode."""
        results: list[Optional[tuple[str, float, int]]] = [None] * len(readings)
        kwargs, batch = self.generate_kwargs(settings), 0
        for mode in dict.fromkeys(reading.read_mode for reading in readings):
            order = [i for i, reading in enumerate(readings) if reading.read_mode == mode]
            for start in range(0, len(order), settings.batch_size):
                chunk = order[start:start + settings.batch_size]
                began = time.perf_counter()
                with self._lock, torch.inference_mode():
                    summaries = self.backend.generate([readings[i] for i in chunk], kwargs)
                seconds = time.perf_counter() - began
                for i, summary in zip(chunk, summaries):
                    results[i] = (summary, seconds, batch)
                batch += 1
        return results

    def generate_kwargs(self, settings: GenerationSettings) -> dict:
        """What the backend passes to generation for `settings`: transformers' arguments, the loop guard's window
        (inference/loop_guard.py) and the compiled decode path's arguments when `settings.compile`."""
        kwargs = {**settings.generate_kwargs(), WINDOW: settings.no_repeat_ngram_window}
        if settings.compile:
            from model.fast_decode import fast_decode_kwargs

            kwargs.update(fast_decode_kwargs(self.backend.model))
        return kwargs

    def _result(self, job: "_Job") -> SummaryResult:
        doc, first = job.document, job.first
        # The document's vision tokens at the mode its pages were read at (fit's, where it chose one); under
        # truncate, pages_read says how many of them the decoder saw.
        vision = (sum(self.backend.vision_tokens(page, first.read_mode) for page in doc.pages)
                  if self.backend.reads_images else None)
        ratio = doc.text_tokens / vision if vision and doc.text_tokens is not None else None
        return SummaryResult(job.summary, len(doc.pages), vision, doc.text_tokens, ratio, round(job.seconds, 4),
                             first.strategy, len(first.readings), job.levels, first.pages_read, first.tokens_read,
                             first.tokens, first.read_mode, job.longest_prompt, self.backend.context)

    def _run(self, documents: list[Document], single: bool, params: dict):
        results = self.summarize_documents(documents, self.generation_settings(**params))
        return results[0] if single else results

    def summarize_text(self, text: Union[str, Sequence[str]], **params):
        """One text -> a SummaryResult; a list of texts -> a list of them. `params`: see inputs.GENERATION_PARAMS."""
        texts = [text] if isinstance(text, str) else list(text)
        return self._run([self.prepare_text(t) for t in texts], isinstance(text, str), params)

    def summarize_image(self, image: Union[ImageSource, Sequence[ImageSource]], **params):
        """One image (path, bytes or PIL image) or a list of them; each image is one single-page document."""
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        return self._run([self.prepare_image(i) for i in images], single, params)

    def summarize_pdf(self, pdf: Union[PdfSource, Sequence[PdfSource]], dpi: int = DEFAULT_PDF_DPI, **params):
        """One PDF (path or bytes) or a list of them; pages rasterised at `dpi`."""
        single = not isinstance(pdf, (list, tuple))
        pdfs = [pdf] if single else list(pdf)
        return self._run([self.prepare_pdf(p, dpi) for p in pdfs], single, params)
