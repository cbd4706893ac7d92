"""DeepSeekSummarizer on the tiny folder: results, rendering as in training, batching, images, PDFs, errors."""
import io
import subprocess
import sys

import pytest
from PIL import Image

from config import LoadSettings, load_run_settings
from data.text_to_image import TextToImageConverter, clean_text
from data.tokens import count_text_tokens
from inference.inputs import InputError, InputTooLarge, load_image, load_pdf
from inference.summarizer import DeepSeekSummarizer, SummaryResult

TEXTS = ["A short note about rivers.",
         "The council met on Monday to discuss the new bridge. " * 12,
         "Markets rallied after the announcement; analysts expect further gains. " * 30]


def png_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def decoded(summarizer, rows: list[list[int]]) -> list[str]:
    """The summaries of generated token rows, as the backend writes them."""
    return [text.strip() for text in summarizer.backend.processor.batch_decode(rows)]


def test_text_result_fields(summarizer, generated):
    result = summarizer.summarize_text(TEXTS[1])
    assert isinstance(result, SummaryResult) and len(generated) == 1 and len(generated[0]) == 4  # the folder's limit
    assert result.summary == decoded(summarizer, generated)[0]
    assert result.pages == 1 and result.vision_tokens == 64  # one 512x512 page: (512/64)^2
    assert result.text_tokens == count_text_tokens(clean_text(TEXTS[1]))  # what the pages show
    assert result.compression_ratio == pytest.approx(result.text_tokens / 64)
    assert result.seconds > 0
    assert set(result.to_dict()) == {"summary", "pages", "vision_tokens", "text_tokens", "compression_ratio",
                                     "seconds", "strategy", "windows", "levels", "pages_read", "tokens_read",
                                     "document_tokens", "read_mode", "prompt_tokens", "context"}
    assert (result.strategy, result.windows, result.levels, result.pages_read, result.tokens_read) == \
        ("direct", 1, 1, 1, 73)  # the whole page: 64 vision tokens in 73 positions
    assert result.context == 4096 and result.prompt_tokens == result.tokens_read + 7  # BOS and the instruction


def test_text_is_rendered_with_the_folder_render_settings(summarizer, tiny_model_dir):
    render, _ = load_run_settings(tiny_model_dir)
    expected = TextToImageConverter(render).render(TEXTS[2]).pages
    pages = summarizer.prepare_text(TEXTS[2]).pages
    assert render.mode == "tiny" and render.font_size == 14
    assert [p.size for p in pages] == [(512, 512)] * len(expected)
    assert [p.tobytes() for p in pages] == [p.tobytes() for p in expected]


def test_batched_equals_one_at_a_time_for_greedy(tiny_model_dir):
    # float32: bf16 (auto on a CPU with bf16 units) rounds differently with the batch's padding and shape.
    summarizer = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu", dtype="float32"))
    batched = summarizer.summarize_text(TEXTS, max_length=6)
    single = [summarizer.summarize_text(text, max_length=6) for text in TEXTS]
    assert [r.summary for r in batched] == [r.summary for r in single]


@pytest.mark.parametrize("name", ["max_new_tokens", "max_length"])
def test_the_limit_bounds_the_generated_tokens(summarizer, generated, name):
    # The folder's own limit is 4: a limit that is ignored gives 4 tokens for both.
    for limit in (2, 7):
        results = summarizer.summarize_text(TEXTS[:2], **{name: limit})
        assert [len(row) for row in generated] == [limit, limit]
        assert [r.summary for r in results] == decoded(summarizer, generated)
        generated.clear()


def one_page_pdf() -> bytes:
    return png_bytes(Image.new("RGB", (100, 60), "white"), format="PDF", resolution=72)


@pytest.mark.parametrize("summarize", [
    lambda s, **params: s.summarize_text(TEXTS[0], **params),
    lambda s, **params: s.summarize_image(Image.new("RGB", (64, 48), "white"), **params),
    lambda s, **params: s.summarize_pdf(one_page_pdf(), dpi=72, **params),
], ids=["text", "image", "pdf"])
def test_max_new_tokens_and_its_reference_name_max_length(summarizer, generated, summarize):
    summarize(summarizer, max_new_tokens=3)
    summarize(summarizer, max_length=2)
    summarize(summarizer, max_new_tokens=5, max_length=5)  # both names, one value: that value
    assert [len(row) for row in generated] == [3, 2, 5]
    with pytest.raises(InputError, match=r"^'max_new_tokens' \(3\) and 'max_length' \(5\) name one setting; "
                                         r"give one of them$"):
        summarize(summarizer, max_new_tokens=3, max_length=5)
    assert summarizer.generation_settings(max_new_tokens=6).max_new_tokens == 6


def test_image_sources_exif_rotation_and_rgb(summarizer, tmp_path):
    wide = Image.new("L", (80, 40), 255)
    wide.paste(0, (0, 0, 10, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was rotated; viewers turn the picture 90 degrees clockwise
    data = png_bytes(wide, format="JPEG", exif=exif)
    loaded = load_image(data)
    assert loaded.size == (40, 80) and loaded.mode == "RGB"
    assert loaded.getpixel((20, 2))[0] < 60 and loaded.getpixel((20, 78))[0] > 200  # dark band now on top

    path = tmp_path / "page.jpg"
    path.write_bytes(data)
    by_path, by_bytes, by_pil = summarizer.summarize_image([path, data, loaded], max_length=3)
    assert by_path.summary == by_bytes.summary == by_pil.summary
    assert by_path.pages == 1 and by_path.text_tokens is None and by_path.compression_ratio is None


def test_pdf_pages_rasterised_at_dpi(summarizer, tmp_path):
    pages = [Image.new("RGB", (144, 72), color) for color in ("white", "gray")]
    path = tmp_path / "doc.pdf"
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72)
    images = load_pdf(path)  # 144x72 points at the default 144 dpi
    assert [image.size for image in images] == [(288, 144)] * 2
    assert load_pdf(path.read_bytes(), dpi=72)[0].size == (144, 72)
    result = summarizer.summarize_pdf(path, max_length=3)
    assert result.pages == 2 and result.vision_tokens == 128


@pytest.mark.parametrize("call, kind, message", [
    (lambda s: s.summarize_text("   "), InputError, "empty"),
    (lambda s: s.summarize_image(b"not an image"), InputError, "not a readable image"),
    (lambda s: s.summarize_image(png_bytes(Image.new("RGB", (64, 64)))[:60]), InputError, "truncated"),
    (lambda s: s.summarize_pdf(b"%PDF-1.4 garbage"), InputError, "not a readable PDF"),
    (lambda s: s.summarize_text("x", max_length=0), InputError, "'max_length': input should be greater than or equal to 1, got 0"),
    (lambda s: s.summarize_text("x", max_new_tokens=0), InputError,
     "'max_new_tokens': input should be greater than or equal to 1, got 0"),
    (lambda s: s.summarize_text("x", temperature=9.0), InputError, "'temperature': input should be less than or equal to 5, got 9.0"),
    (lambda s: s.summarize_text("x", top_k=3), InputError, "unknown generation parameter"),
    (lambda s: s.summarize_text("word " * 4000), InputTooLarge, "max_pages"),
])
def test_bad_inputs_raise_clear_errors(summarizer, call, kind, message):
    with pytest.raises(kind, match=message):
        call(summarizer)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(InputTooLarge, match="more than the limit"):
        load_image(png_bytes(Image.new("RGB", (300, 300))), max_pixels=10_000)


def test_seq2seq_baseline_folder(seq2seq_model_dir):
    baseline = DeepSeekSummarizer.from_pretrained(seq2seq_model_dir, LoadSettings(device="cpu"))
    assert baseline.model_type == "seq2seq" and baseline.backend.source_prefix == "summarize: "
    result = baseline.summarize_text(TEXTS[1])
    assert isinstance(result.summary, str) and result.vision_tokens is None and result.pages == 0
    with pytest.raises(InputError, match="text-only"):
        baseline.summarize_image(Image.new("RGB", (8, 8)))


def test_package_import_is_light_and_exports():
    out = subprocess.run([sys.executable, "-c", "import sys, inference; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from inference import DeepSeekSummarizer as from_package
    from inference.infer import DeepSeekSummarizer as from_cli_module

    assert from_package is from_cli_module is DeepSeekSummarizer
