"""Decoding of user inputs (images, PDFs, text files, generation parameters), with one error type.

Every failure is an `InputError` whose message is one user-facing line; `InputTooLarge` marks inputs over a size
limit (pixels, pages), which the API server answers with 413. Nothing here imports torch or the model.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from config import ConfigError, GenerationSettings, UserError, apply_overrides
from config.loading import field_extra, parse_text

DEFAULT_PDF_DPI = 144  # the official PDF script's rasterisation resolution
MIN_PDF_DPI, MAX_PDF_DPI = 36, 600

ImageSource = Union[str, Path, bytes, bytearray, Image.Image]
PdfSource = Union[str, Path, bytes, bytearray]


def _request_names() -> dict[str, str]:
    """Per-request generation parameters: each name a request may use -> its GenerationSettings field. A field goes
    by its own name (max_new_tokens, as on the command line) and by its `public` name where it has one (max_length,
    the reference README's); fields marked `per_request` false (batch size, the compiled decode path) are the
    server's and the command's business, not a request's."""
    names = {}
    for f in dataclasses.fields(GenerationSettings):
        extra = field_extra(GenerationSettings, f.name)
        if extra.get("per_request", True):
            names.update({name: f.name for name in (f.name, extra.get("public")) if name})
    return names


GENERATION_PARAMS = _request_names()


class InputError(UserError, ValueError):
    """An input the summarizer cannot use; the message says what was wrong."""

    status = 400


class InputTooLarge(InputError):
    """An input over a size limit (pixels or pages)."""

    status = 413


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputTooLarge(f"{what} is {width}x{height} = {width * height} pixels, more than the limit of "
                            f"{max_pixels}")


def _read_bytes(source: Union[str, Path, bytes, bytearray], what: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}")
        data = path.read_bytes()
    if not data:
        raise InputError(f"{what} is empty")
    return data


def load_image(source: ImageSource, max_pixels: int | None = None) -> Image.Image:
    """An RGB image with its EXIF orientation applied, from a path, bytes or a PIL image.

    The pixel limit is checked on the header's size before any pixel is decoded (decompression-bomb guard).
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        data = _read_bytes(source, "image")
        try:
            # Pillow's global bomb check only warns below 2x its limit; ours (the size check below) is per call.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise InputTooLarge(f"image is too large to decode safely ({err})") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise InputError("file is not a readable image (PNG, JPEG, WebP, TIFF, BMP, GIF...)") from None
    _check_pixels(*image.size, max_pixels, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # Truncated or corrupt pixel data only shows when decoding.
        raise InputError(f"image data is truncated or corrupt ({err})") from None


def load_pdf(source: PdfSource, dpi: int = DEFAULT_PDF_DPI, max_pixels: int | None = None,
             max_pages: int | None = None) -> list[Image.Image]:
    """Every page of a PDF rasterised with pypdfium2 at `dpi` (RGB)."""
    import pypdfium2 as pdfium

    if isinstance(dpi, bool) or not isinstance(dpi, int) or not MIN_PDF_DPI <= dpi <= MAX_PDF_DPI:
        raise InputError(f"dpi must be an integer between {MIN_PDF_DPI} and {MAX_PDF_DPI}, got {dpi!r}")
    data = _read_bytes(source, "PDF")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        raise InputError(f"file is not a readable PDF ({err})") from None
    try:
        count = len(pdf)
        if count == 0:
            raise InputError("PDF has no pages")
        if max_pages is not None and count > max_pages:
            raise InputTooLarge(f"PDF has {count} pages, more than the limit of {max_pages}")
        scale = dpi / 72  # PDF user space is 72 units per inch
        pages = []
        for index in range(count):
            page = pdf[index]
            width, height = page.get_size()
            _check_pixels(round(width * scale), round(height * scale), max_pixels, f"PDF page {index + 1} at {dpi} dpi")
            pages.append(page.render(scale=scale).to_pil().convert("RGB"))
        return pages
    finally:
        pdf.close()


def decode_text(data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); anything else is an InputError."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"text is not valid UTF-8 (byte {err.start}); save the file as UTF-8") from None
    if not text.strip():
        raise InputError("text is empty")
    return text


def apply_generation_params(base: GenerationSettings, **params) -> GenerationSettings:
    """`base` with the given GENERATION_PARAMS (None: keep), validated by GenerationSettings' own declaration; a
    bad value is an InputError naming the parameter as the caller spelled it, and so is one setting given under
    both its names with two values."""
    unknown = sorted(set(params) - set(GENERATION_PARAMS))
    if unknown:
        raise InputError(f"unknown generation parameter {unknown[0]!r} (known: {', '.join(GENERATION_PARAMS)})")
    overrides, spelled = {}, {}  # field -> value, field -> the name the caller gave it
    for name, value in params.items():
        field_name = GENERATION_PARAMS[name]
        if value is None:
            continue
        if field_name in overrides and overrides[field_name] != value:
            raise InputError(f"'{spelled[field_name]}' ({overrides[field_name]!r}) and '{name}' ({value!r}) name "
                             f"one setting; give one of them")
        overrides[field_name], spelled[field_name] = value, name
    try:
        return apply_overrides(base, overrides)
    except ConfigError as err:
        message = str(err)
        for field_name, name in spelled.items():
            message = message.replace(f"config key '{field_name}'", f"'{name}'")
        raise InputError(message) from None


def form_value(name: str, text: str):
    """A multipart form field (always text) as the type its generation parameter is declared with, by the parser
    the API server's environment variables use too: "false" is False, and empty text for an Optional setting is
    None (the server's value is kept)."""
    try:
        return parse_text(GenerationSettings, GENERATION_PARAMS[name], text, f"form field '{name}'")
    except ConfigError as err:
        raise InputError(str(err)) from None
