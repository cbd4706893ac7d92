"""Render text into page images (grayscale, black on white) for DeepSeek-OCR's resolution modes.

Text is wrapped by measured pixel width, paginated (never silently cut) and drawn with the DejaVu Sans file
shipped in data/fonts, so the same text gives the same pixels on every machine with the pinned Pillow.

Speed: FreeType rasterises a glyph far slower than numpy copies it, so each glyph is rasterised once per
converter and each word is composed from those glyph bitmaps once and cached, also as column-major bytes
padded to the line's height: a whole line is then one `bytes.join` of words and gaps, stamped onto the page in
one numpy call. Wrapping uses the same cached advances and ink boxes, so ink never leaves the text area.
"""
from __future__ import annotations

import functools
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from config import DEFAULT_BACKBONE, RenderConfig, UserError, page_geometry
from data.tokens import count_text_tokens

FONT_PATH = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"
TAB_SIZE = 4
# Controls and invisible format characters left after line splitting: C0/C1 controls, soft hyphen, zero-width
# and bidi marks, BOM, interlinear annotation marks, and lone surrogates (which no font can render).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    "\ufff9-\ufffb\ud800-\udfff]"
)
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point DejaVu lacks: it draws the .notdef box
_WORD_CACHE_BYTES = 64 * 2**20  # bitmaps kept per converter; the cache restarts when full


class RenderError(UserError, ValueError):
    """Text that cannot be rendered under the given settings; the message is one user-facing line."""


@dataclass
class RenderedDocument:
    pages: list[Image.Image]
    mode: str
    backbone: str  # whose vision tokens are counted
    text_tokens: int  # DeepSeek-OCR text tokens of the whole (cleaned) text
    vision_tokens: int  # the backbone's vision tokens per page (config/geometry.py), summed
    compression_ratio: float  # text_tokens / vision_tokens
    missing_characters: list[str]  # characters the font lacks, drawn as its .notdef box

    @property
    def num_pages(self) -> int:
        return len(self.pages)

    def stats(self) -> dict:
        return {"pages": self.num_pages, "text_tokens": self.text_tokens, "vision_tokens": self.vision_tokens,
                "compression_ratio": self.compression_ratio, "mode": self.mode,
                "backbone": self.backbone}


class _Bitmap(NamedTuple):
    """Ink of a glyph or word relative to its pen origin (top of the ascender): coverage 0-255."""

    advance: float
    left: int  # ink box, pixels from the origin; right is exclusive
    top: int
    right: int
    coverage: Optional[np.ndarray]  # None when there is no ink (spaces)
    # Coverage padded to rows 0..ascent+descent, transposed, as bytes; None if ink leaves that band.
    columns: Optional[bytes] = None


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # BASIC layout: no dependency on whether libraqm is installed, so layout is the same everywhere.
    return ImageFont.truetype(str(FONT_PATH), size, layout_engine=ImageFont.Layout.BASIC)


def clean_text(text: str) -> str:
    """Text as it will be drawn: NFC, "\\n" line ends, tabs as spaces, controls and zero-width stripped."""
    lines = [_INVISIBLE.sub("", line).expandtabs(TAB_SIZE).rstrip()
             for line in unicodedata.normalize("NFC", text).splitlines()]
    # One blank line per paragraph break at most, so runs of newlines cannot produce blank pages.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


class TextToImageConverter:
    """Renders text into pages of `config.mode`'s size, counting their vision tokens as `backbone` reads them; reuse
    one instance, its glyph and word caches are warm."""

    def __init__(self, config: RenderConfig | None = None, *, backbone: str = DEFAULT_BACKBONE, **overrides) -> None:
        self.config = replace(config or RenderConfig(), **overrides)  # replace() re-runs validation
        self.backbone, self.geometry = backbone, page_geometry(backbone)
        self.geometry.view(self.config.mode)  # a mode the backbone cannot read: one line, before any page
        self._glyphs: dict[str, _Bitmap] = {}
        self._words: dict[str, _Bitmap] = {}
        self._word_bytes = 0
        self._notdef: Optional[tuple] = None
        self._font = _font(self.config.font_size)
        self._band = sum(self._font.getmetrics())  # rows of one line of text: ascent + descent

    def __getstate__(self) -> dict:  # worker processes rebuild the caches instead of receiving them
        return {"config": self.config, "backbone": self.backbone}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"], backbone=state["backbone"])

    # Geometry.
    def _text_width(self) -> int:
        return self.config.geometry.page_width - 2 * self.config.margin

    def _lines_per_page(self) -> int:
        free = self.config.geometry.page_height - 2 * self.config.margin - self._band
        if free < 0:
            raise RenderError(f"font_size {self.config.font_size} is too large for a {self.config.mode} page")
        return 1 + int(free // (self.config.font_size * self.config.line_spacing))

    # Glyph and word bitmaps.
    def _rasterise(self, char: str) -> _Bitmap:
        font = self._font
        left, top, right, bottom = font.getbbox(char)
        if right <= left or bottom <= top:
            return _Bitmap(font.getlength(char), left, top, right, None)
        image = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(image).text((-left, -top), char, font=font, fill=255)
        coverage = np.asarray(image)
        return _Bitmap(font.getlength(char), left, top, right, coverage, self._columns(coverage, top))

    def _columns(self, coverage: np.ndarray, top: int) -> Optional[bytes]:
        """`coverage` (whose first row is `top`) padded to the line band and transposed, as bytes."""
        band = self._band
        if top < 0 or top + coverage.shape[0] > band:
            return None
        padded = np.zeros((coverage.shape[1], band), np.uint8)
        padded[:, top:top + coverage.shape[0]] = coverage.T
        return padded.tobytes()

    def _glyph(self, char: str) -> _Bitmap:
        glyph = self._glyphs.get(char)
        if glyph is None:
            glyph = self._glyphs[char] = self._rasterise(char)
        return glyph

    def _is_missing(self, char: str) -> bool:
        """True when the font has no glyph for `char`: it draws exactly the .notdef box."""
        if self._notdef is None:
            self._notdef = _signature(self._rasterise(_NOTDEF_PROBE))
        return _signature(self._glyph(char)) == self._notdef

    def _word(self, word: str) -> _Bitmap:
        cached = self._words.get(word)
        if cached is not None:
            return cached
        pen, placed = 0.0, []
        for char in word:
            glyph = self._glyph(char)
            if glyph.coverage is not None:
                placed.append((round(pen) + glyph.left, glyph))
            pen += glyph.advance
        if not placed:
            return self._cache(word, _Bitmap(pen, 0, 0, 0, None))
        start, end, columns = _join_columns(placed, self._band)
        if columns is not None:  # the usual case: glyphs side by side within the band
            coverage = np.frombuffer(columns, np.uint8).reshape(end - start, self._band).T
            return self._cache(word, _Bitmap(pen, start, 0, end, coverage, columns))
        # Overlapping glyphs or ink above/below the band: stamp glyph by glyph.
        left = min(x for x, _ in placed)
        top = min(0, min(glyph.top for _, glyph in placed))
        right = max(x + glyph.right - glyph.left for x, glyph in placed)
        bottom = max(self._band, max(glyph.top + glyph.coverage.shape[0] for _, glyph in placed))
        coverage = np.zeros((bottom - top, right - left), np.uint8)
        for x, glyph in placed:
            _stamp(coverage, glyph.coverage, x - left, glyph.top - top)
        return self._cache(word, _Bitmap(pen, left, top, right, coverage, self._columns(coverage, top)))

    def _cache(self, word: str, bitmap: _Bitmap) -> _Bitmap:
        if bitmap.coverage is not None:
            if self._word_bytes > _WORD_CACHE_BYTES:
                self._words.clear()
                self._word_bytes = 0
            self._word_bytes += 2 * bitmap.coverage.nbytes
        self._words[word] = bitmap
        return bitmap

    # Layout: a line is a list of (x, word bitmap); x is measured from the left margin.
    def _layout(self, text: str) -> list[list[tuple[int, _Bitmap]]]:
        width = self._text_width()
        space = self._glyph(" ").advance
        words, word_bitmap = self._words, self._word
        lines: list[list[tuple[int, _Bitmap]]] = []
        for paragraph in text.split("\n"):
            line: list[tuple[int, _Bitmap]] = []
            pen = 0.0
            for word in paragraph.split(" "):  # only ASCII spaces break: no-break spaces stay inside words
                bitmap = words.get(word) or word_bitmap(word)
                pieces = [bitmap] if bitmap.right <= width else [word_bitmap(p) for p in self._split(word, width)]
                for bitmap in pieces:
                    x = pen + space if line else 0.0
                    if line and round(x) + bitmap.right > width:
                        lines.append(line)
                        line, x = [], 0.0
                        if bitmap.coverage is None:  # spaces at the wrap point are not carried over
                            continue
                    line.append((round(x), bitmap))
                    pen = x + bitmap.advance
            lines.append(line)
        return lines

    def _split(self, word: str, width: int) -> list[str]:
        """Pieces of a word wider than a line, each as long as fits on a line."""
        # The same arithmetic as _word: a glyph's ink ends at round(pen) + its right edge.
        pieces, start, pen = [], 0, 0.0
        for index, char in enumerate(word):
            glyph = self._glyph(char)
            if glyph.coverage is not None and index > start and round(pen) + glyph.right > width:
                pieces.append(word[start:index])
                start, pen = index, 0.0
            pen += glyph.advance
        pieces.append(word[start:])
        return pieces

    def _draw(self, lines: list[list[tuple[int, _Bitmap]]]) -> Image.Image:
        geometry, margin, band = self.config.geometry, self.config.margin, self._band
        ink = np.zeros((geometry.page_height, geometry.page_width), np.uint8)
        line_height = self.config.font_size * self.config.line_spacing
        for row, line in enumerate(lines):
            y = margin + round(row * line_height)
            placed = [(x + word.left, word) for x, word in line if word.coverage is not None]
            if not placed:
                continue
            start, end, columns = _join_columns(placed, band)
            if columns is not None:
                _stamp(ink, np.frombuffer(columns, np.uint8).reshape(end - start, band).T, margin + start, y)
            else:  # a word overlaps its neighbour or leaves the band: stamp word by word
                for x, word in placed:
                    _stamp(ink, word.coverage, margin + x, y + word.top)
        return Image.fromarray(np.subtract(255, ink, out=ink))

    def _paginate(self, text: str) -> tuple[str, list[list[list[tuple[int, _Bitmap]]]]]:
        """(the cleaned text, its lines laid out page by page), or the RenderError `render` would raise."""
        if not isinstance(text, str):
            raise RenderError(f"text to render must be a string, got {type(text).__name__}")
        text = clean_text(text)
        if not text.strip():
            raise RenderError("text to render is empty (or only whitespace and control characters)")
        lines = self._layout(text)
        per_page = self._lines_per_page()
        chunks = [lines[i:i + per_page] for i in range(0, len(lines), per_page)]
        needed, config = len(chunks), self.config
        if needed > 1 and config.overflow == "error":
            raise RenderError(f"text needs {needed} pages in mode {config.mode} at font_size {config.font_size}, "
                              "but overflow='error' allows one")
        if config.max_pages is not None and needed > config.max_pages:
            raise RenderError(f"text needs {needed} pages in mode {config.mode} at font_size {config.font_size}, "
                              f"more than max_pages={config.max_pages}")
        return text, chunks

    # Public API.
    def count_pages(self, text: str) -> int:
        """The pages `render(text)` makes, from the layout alone (nothing is drawn), each of the mode's page size."""
        return len(self._paginate(text)[1])

    def render(self, text: str) -> RenderedDocument:
        text, chunks = self._paginate(text)
        pages = [self._draw(chunk) for chunk in chunks]
        vision_tokens = len(pages) * self._page_vision_tokens()
        text_tokens = count_text_tokens(text)
        missing = [char for char in dict.fromkeys(text) if char not in " \n" and self._is_missing(char)]
        return RenderedDocument(pages, self.config.mode, self.backbone, text_tokens, vision_tokens,
                                text_tokens / vision_tokens, missing)

    def recount(self, stats: dict) -> dict:
        """`stats` (RenderedDocument.stats) of pages rendered with these settings, their vision tokens counted as
        this converter's backbone reads them: the pages are the same whichever model reads them."""
        vision_tokens = stats["pages"] * self._page_vision_tokens()
        return {**stats, "vision_tokens": vision_tokens, "compression_ratio": stats["text_tokens"] / vision_tokens,
                "backbone": self.backbone}

    def _page_vision_tokens(self) -> int:
        page = self.config.geometry
        return self.geometry.vision_tokens(self.config.mode, page.page_width, page.page_height)

    def save_pages(self, document: RenderedDocument, out_dir, stem: str) -> list[Path]:
        """Write pages as `{stem}_p{index:03d}.png` (index from 0), each atomically; returns the paths."""
        if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
            raise RenderError(f"page file stem must be a plain file name, got {stem!r}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, page in enumerate(document.pages):
            path = out_dir / f"{stem}_p{index:03d}.png"
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    # Level 1: several times faster than the default and barely larger for text pages.
                    page.save(handle, format="PNG", compress_level=1)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths.append(path)
        return paths


def _signature(glyph: _Bitmap) -> tuple:
    coverage = b"" if glyph.coverage is None else glyph.coverage.tobytes()
    shape = None if glyph.coverage is None else glyph.coverage.shape
    return glyph.advance, glyph.left, glyph.top, shape, coverage


def _join_columns(placed: list[tuple[int, _Bitmap]], band: int) -> tuple[int, int, Optional[bytes]]:
    """Bitmaps at ink start x (ascending) joined with blank gaps: (first x, end x, column-major bytes).

    The bytes are None when a bitmap has no band-aligned columns or overlaps the one before it.
    """
    chunks, start, cursor = [], placed[0][0], placed[0][0]
    for x, bitmap in placed:
        if bitmap.columns is None or x < cursor:
            return start, cursor, None
        if x > cursor:
            chunks.append(bytes((x - cursor) * band))
        chunks.append(bitmap.columns)
        cursor = x + bitmap.right - bitmap.left
    return start, cursor, b"".join(chunks)


def _stamp(target: np.ndarray, coverage: np.ndarray, x: int, y: int) -> None:
    """Darkest-wins copy of `coverage` into `target` at (x, y), clipped to `target`."""
    height, width = coverage.shape
    if x >= 0 and y >= 0 and x + width <= target.shape[1] and y + height <= target.shape[0]:
        region = target[y:y + height, x:x + width]
        np.maximum(region, coverage, out=region)
        return
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, target.shape[1]), min(y + height, target.shape[0])
    if x1 > x0 and y1 > y0:
        region = target[y0:y1, x0:x1]
        np.maximum(region, coverage[y0 - y:y1 - y, x0 - x:x1 - x], out=region)
