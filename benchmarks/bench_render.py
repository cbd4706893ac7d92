"""Pages per second per core: data/text_to_image.py against a naive Pillow renderer, on real abstracts.

Both render the same documents (SciTLDR-A test abstracts joined to fill about two pages each) in the same run,
single-threaded; time is CPU time of this process, so the figure is per core. Each repeat uses a fresh converter,
so its glyph and word caches start cold. Rows: render alone, and render plus writing PNG files (the converter's
`save_pages`, the naive renderer's default `Image.save`).

    python -m benchmarks.bench_render [--quick]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from benchmarks.cli import benchmark_main
from config import RESOLUTION_MODES, RenderConfig
from data.text_to_image import FONT_PATH, TextToImageConverter
from data.tokens import count_text_tokens

ABSTRACTS = Path(__file__).resolve().parent.parent / "data" / "bundled" / "scitldr-a" / "test.jsonl"


def load_documents(chars_per_doc: int, count: int) -> list[str]:
    """`count` documents of whole abstracts (one paragraph each), each at least `chars_per_doc` long."""
    documents, current = [], []
    for line in ABSTRACTS.read_text(encoding="utf-8").splitlines():
        current.append(" ".join(json.loads(line)["source"]))
        if sum(len(p) for p in current) >= chars_per_doc:
            documents.append("\n".join(current))
            current = []
            if len(documents) == count:
                break
    return documents


def naive_render(text: str, config: RenderConfig) -> list[Image.Image]:
    """Character-count wrapping with textwrap and one `ImageDraw.text` call per line."""
    font = ImageFont.truetype(str(FONT_PATH), config.font_size)
    geometry, margin = config.geometry, config.margin
    chars_per_line = int((geometry.page_width - 2 * margin) / (0.55 * config.font_size))
    line_height = config.font_size * config.line_spacing
    per_page = int((geometry.page_height - 2 * margin) // line_height)
    lines = [row for paragraph in text.split("\n") for row in textwrap.wrap(paragraph, chars_per_line) or [""]]
    pages = []
    for start in range(0, len(lines), per_page):
        page = Image.new("L", (geometry.page_width, geometry.page_height), 255)
        draw = ImageDraw.Draw(page)
        for row, line in enumerate(lines[start:start + per_page]):
            draw.text((margin, margin + row * line_height), line, font=font, fill=0)
        pages.append(page)
    return pages


def _time(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run(quick: bool = False) -> list[dict]:
    modes = ["tiny", "base"] if quick else list(RESOLUTION_MODES)
    repeats = 3
    count_text_tokens("warm up")  # the tokenizer loads once per process, not per page
    rows = []
    for mode in modes:
        config = RenderConfig(mode=mode)
        geometry = config.geometry
        # About two pages of text per document at the default font (roughly 7 px per character).
        capacity = (geometry.page_width - 2 * config.margin) * (geometry.page_height - 2 * config.margin)
        documents = load_documents(int(2 * capacity / (7 * config.font_size * config.line_spacing)),
                                   3 if quick else 6)
        pages = sum(TextToImageConverter(config).render(d).num_pages for d in documents)
        naive_pages = sum(len(naive_render(d, config)) for d in documents)
        times = {"fast": [], "naive": [], "fast+png": [], "naive+png": []}
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                converter = TextToImageConverter(config)
                times["fast"].append(_time(lambda: [converter.render(d) for d in documents]))
                converter = TextToImageConverter(config)
                times["fast+png"].append(_time(lambda: [
                    converter.save_pages(converter.render(d), tmp, f"f{i}") for i, d in enumerate(documents)]))
                times["naive"].append(_time(lambda: [naive_render(d, config) for d in documents]))
                times["naive+png"].append(_time(lambda: [
                    page.save(Path(tmp) / f"n{i}_{j}.png")
                    for i, d in enumerate(documents) for j, page in enumerate(naive_render(d, config))]))
        median = {key: statistics.median(values) for key, values in times.items()}
        for suffix in ("", "+png"):
            rows.append({
                "mode": mode,
                "work": "render" + (" + PNG" if suffix else ""),
                "pages": pages,
                "fast_pages_per_s": round(pages / median["fast" + suffix], 1),
                "naive_pages_per_s": round(naive_pages / median["naive" + suffix], 1),
                # Same documents for both: the ratio of times is the speed-up.
                "speedup": round(median["naive" + suffix] / median["fast" + suffix], 2),
            })
    return rows


def main(argv=None) -> int:
    return benchmark_main(run, __doc__, "two modes (tiny, base) and fewer documents", argv)


if __name__ == "__main__":
    sys.exit(main())
