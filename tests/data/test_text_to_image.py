import hashlib
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from config import RenderConfig, UserError
from config.loading import ConfigError
from data.text_to_image import FONT_PATH, RenderError, TextToImageConverter, clean_text
from data.tokens import count_text_tokens

ROOT = Path(__file__).resolve().parents[2]
DEJAVU_SANS_SHA256 = "abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322"  # Debian 2.37-6
# Pixels of DETERMINISM_TEXT at tiny/12 px with the pinned Pillow. A change means renders differ from those
# that trained models saw: update only on purpose.
DETERMINISM_TEXT = "Deterministic pages: the same text gives the same pixels, Ünïcödé — ≥ 42."
DETERMINISM_SHA256 = "c04bd3f95b13e9b0bf32c773e56776ecc2492df82a7237944f07af714ffdd5a3"


def abstracts(count: int) -> str:
    lines = (ROOT / "data/bundled/scitldr-a/test.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    return "\n".join(" ".join(json.loads(line)["source"]) for line in lines)


def ink(page) -> np.ndarray:
    return np.asarray(page) < 128


def ink_rows(page) -> int:
    """Number of separate bands of inked rows: text lines."""
    rows = ink(page).any(axis=1).astype(np.int8)
    return int((np.diff(np.concatenate([[0], rows])) == 1).sum())


def tesseract(page, tmp_path) -> str:
    if shutil.which("tesseract") is None:  # a missing tool fails: `bash setup.sh --dev` installs it
        pytest.fail("tesseract is not installed: run `bash setup.sh --dev` (apt-get install tesseract-ocr)")
    path = tmp_path / "page.png"
    page.save(path)
    return subprocess.run(["tesseract", str(path), "stdout", "--psm", "6"], capture_output=True, text=True,
                          check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"}).stdout


def char_accuracy(reference: str, hypothesis: str) -> float:
    """1 - Levenshtein distance / reference characters, on whitespace-normalised text."""
    reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
    hyp = np.frombuffer(hypothesis.encode("utf-32-le"), np.uint32)
    positions = np.arange(len(hyp) + 1)
    previous = positions.copy()
    for i, char in enumerate(reference, 1):
        # Deletion or substitution from the previous row, then insertions as a running minimum along the row.
        best = np.minimum(previous[1:] + 1, previous[:-1] + (hyp != ord(char)))
        current = np.concatenate([[i], best])
        previous = np.minimum.accumulate(current - positions) + positions
    return 1 - previous[-1] / len(reference)


def test_bundled_font_is_dejavu_sans_with_license():
    assert hashlib.sha256(FONT_PATH.read_bytes()).hexdigest() == DEJAVU_SANS_SHA256
    assert "Bitstream Vera" in (FONT_PATH.parent / "LICENSE-DejaVu.txt").read_text()


def test_config_and_overrides():
    converter = TextToImageConverter(mode="base", font_size=10)
    assert (converter.config.mode, converter.config.font_size, converter.config.margin) == ("base", 10, 20)
    assert TextToImageConverter(RenderConfig(mode="tiny")).config.mode == "tiny"
    with pytest.raises(ConfigError):
        TextToImageConverter(mode="huge")


@pytest.mark.parametrize("mode,size", [("tiny", (512, 512)), ("small", (640, 640)), ("base", (1024, 1024)),
                                       ("large", (1280, 1280)), ("gundam", (1280, 1920)), ("page", (1800, 2400))])
def test_page_size_per_mode_black_on_white(mode, size):
    page = TextToImageConverter(mode=mode).render("Hello world.").pages[0]
    assert page.mode == "L" and page.size == size
    pixels = np.asarray(page)
    assert pixels.max() == 255 and pixels.min() == 0 and (pixels == 255).mean() > 0.99


def test_wrapping_keeps_ink_inside_the_text_area():
    converter = TextToImageConverter(mode="tiny", margin=30)
    text = "Wide words WWWWWWW MMMMMMM mmmmmmm ffffffj " * 30 + "x" * 400  # includes an over-long word
    document = converter.render(text)
    for page in document.pages:
        columns = np.flatnonzero(ink(page).any(axis=0))
        assert columns.min() >= 30 - 1 and columns.max() < 512 - 30
    assert document.num_pages >= 1 and ink_rows(document.pages[0]) > 10


def test_newlines_are_kept_as_line_breaks():
    converter = TextToImageConverter(mode="tiny", font_size=20)
    one_line = converter.render("alpha beta gamma").pages[0]
    three_lines = converter.render("alpha\nbeta\n\ngamma").pages[0]
    assert ink_rows(one_line) == 1 and ink_rows(three_lines) == 3
    tops = np.flatnonzero(np.diff(np.concatenate([[0], ink(three_lines).any(axis=1).astype(np.int8)])) == 1)
    assert tops[2] - tops[1] > 1.8 * (tops[1] - tops[0])  # the blank line between paragraphs is kept


def test_pagination_keeps_every_line():
    converter = TextToImageConverter(mode="tiny", font_size=20)
    lines = [f"line {i}" for i in range(60)]
    document = converter.render("\n".join(lines))
    assert document.num_pages > 2
    assert sum(ink_rows(page) for page in document.pages) == len(lines)



@pytest.mark.parametrize("mode,font_size,line_spacing", [("tiny", 12, 1.2), ("tiny", 20, 1.0), ("small", 14, 1.5)])
def test_paginated_pages_keep_every_margin_blank(mode, font_size, line_spacing):
    converter = TextToImageConverter(mode=mode, font_size=font_size, line_spacing=line_spacing)
    document = converter.render(abstracts(3))
    margin, line_height = converter.config.margin, font_size * line_spacing
    assert document.num_pages >= 2
    for number, page in enumerate(document.pages, 1):
        pixels = np.asarray(page)
        height, width = pixels.shape
        for side, strip in (("bottom", pixels[height - margin:]), ("top", pixels[:margin]),
                            ("left", pixels[:, :margin]), ("right", pixels[:, width - margin:])):
            assert (strip == 255).all(), f"page {number}: ink in the {side} margin"
        if number < document.num_pages:  # a full page: its last line sits just above the bottom margin
            assert np.flatnonzero(ink(page).any(axis=1)).max() >= height - margin - 2.5 * line_height


def test_paginated_text_reads_back_in_order(tmp_path):
    text = abstracts(2)
    document = TextToImageConverter(mode="tiny").render(text)
    assert document.num_pages >= 2
    read = " ".join(tesseract(page, tmp_path) for page in document.pages)
    assert char_accuracy(text, read) >= 0.97


def test_max_pages_and_overflow_errors():
    text = "\n".join(f"line {i}" for i in range(60))
    with pytest.raises(RenderError, match=r"needs (\d+) pages .*max_pages=2"):
        TextToImageConverter(mode="tiny", font_size=20, max_pages=2).render(text)
    with pytest.raises(RenderError, match="overflow='error'"):
        TextToImageConverter(mode="tiny", font_size=20, overflow="error").render(text)
    assert TextToImageConverter(mode="tiny", overflow="error").render("short").num_pages == 1


@pytest.mark.parametrize("text", ["", "   \n\t ", "\u200b\x00\x1b"])
def test_empty_text_is_an_error(text):
    with pytest.raises(RenderError, match="empty"):
        TextToImageConverter().render(text)


def test_control_characters_are_cleaned():
    assert clean_text("a\tb\r\nc\rd\x00e\x1bf\u200bg\x85h\ufeffi\n\n\n\nj") == "a   b\nc\ndefg\nhi\n\nj"
    converter = TextToImageConverter(mode="tiny")
    assert (np.asarray(converter.render("ab\x00\x07\u200bcd").pages[0])
            == np.asarray(converter.render("abcd").pages[0])).all()


def test_missing_characters_are_reported():
    document = TextToImageConverter(mode="tiny").render("Greek αβγ and 😀 are in, 漢字 क \U0001f9e0 are not, \ue000 either.")
    assert document.missing_characters == ["漢", "字", "क", "\U0001f9e0", "\ue000"]
    assert TextToImageConverter().render("Ünïcödé — “quotes” ≥ 42 €").missing_characters == []


def test_renders_are_deterministic(tmp_path):
    first = TextToImageConverter(mode="tiny")
    first.render(abstracts(2))  # a warm cache must not change pixels
    warm = first.render(DETERMINISM_TEXT)
    cold = pickle.loads(pickle.dumps(first)).render(DETERMINISM_TEXT)
    (a,), (b,) = first.save_pages(warm, tmp_path / "a", "doc"), first.save_pages(cold, tmp_path / "b", "doc")
    assert a.read_bytes() == b.read_bytes()
    digest = hashlib.sha256(np.asarray(warm.pages[0]).tobytes()).hexdigest()
    assert digest == DETERMINISM_SHA256


@pytest.mark.parametrize("backbone, per_page", [("deepseek-ocr", 256 + 6 * 100), ("deepseek-ocr-2", 256 + 6 * 144)])
def test_stats_arithmetic(backbone, per_page):
    """A 1280x1920 gundam page: a 1024 px view (256 tokens) and six tiles (640 px: 100 each; DeepSeek-OCR-2's
    768 px: 144 each)."""
    text = abstracts(2)
    document = TextToImageConverter(mode="gundam", font_size=16, backbone=backbone).render(text)
    assert document.vision_tokens == document.num_pages * per_page
    assert document.text_tokens == count_text_tokens(clean_text(text))
    assert document.compression_ratio == pytest.approx(document.text_tokens / document.vision_tokens)
    stats = document.stats()
    assert stats == {"pages": document.num_pages, "text_tokens": document.text_tokens,
                     "vision_tokens": document.vision_tokens, "compression_ratio": document.compression_ratio,
                     "mode": "gundam", "backbone": backbone}
    json.dumps(stats)


def test_a_mode_the_backbone_cannot_read_is_refused_before_any_page():
    with pytest.raises(UserError, match="DeepSeek-OCR-2 reads pages at small, base, large, gundam, page, not 'tiny'"):
        TextToImageConverter(mode="tiny", backbone="deepseek-ocr-2")


def test_save_pages_writes_numbered_pngs_atomically(tmp_path):
    converter = TextToImageConverter(mode="tiny", font_size=20)
    document = converter.render("\n".join(f"line {i}" for i in range(40)))
    paths = converter.save_pages(document, tmp_path / "out", "doc")
    assert [p.name for p in paths] == [f"doc_p{i:03d}.png" for i in range(document.num_pages)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]  # no temp files left
    with pytest.raises(RenderError, match="stem"):
        converter.save_pages(document, tmp_path, "../escape")


def test_default_base_page_is_legible_to_ocr(tmp_path):
    text = abstracts(4)
    document = TextToImageConverter(mode="base", overflow="error").render(text)
    assert char_accuracy(text, tesseract(document.pages[0], tmp_path)) >= 0.98
