"""The image processor against the official preprocessing and token-count rules (reference fixture cases A, B)."""
import pytest
import torch
from PIL import Image

from config.modes import RESOLUTION_MODES, tile_grid, vision_tokens_per_view
from model.checkpoint.export import OFFICIAL_PROCESSOR_CONFIG
from model.image_processing import DeepSeekOCRImageProcessor, normalize_pixels, num_image_placeholders


def page_placeholders(mode: str, width: int, height: int) -> int:
    """Placeholders of a blank width x height page, as the mode's processor counts them when it processes it."""
    return DeepSeekOCRImageProcessor.from_mode(mode)(Image.new("RGB", (width, height))).num_placeholders


def _official_count(base_size: int, image_size: int, cols: int, rows: int) -> int:
    """The official infer() expansion, spelled out as it builds the id list."""
    q, qt = -(-base_size // 16 // 4), -(-image_size // 16 // 4)
    tokens = ([0] * q + [0]) * q + [0]
    if cols > 1 or rows > 1:
        tokens += ([0] * (qt * cols) + [0]) * (qt * rows)
    return len(tokens)


@pytest.mark.parametrize("side, expected", [(512, 73), (640, 111), (1024, 273), (1280, 421)])
def test_placeholders_without_tiles(side, expected):
    assert num_image_placeholders(side, side) == expected
    mode = {512: "tiny", 640: "small", 1024: "base", 1280: "large"}[side]
    assert page_placeholders(mode, 1800, 2400) == expected
    assert DeepSeekOCRImageProcessor.from_mode(mode).num_placeholders() == expected


@pytest.mark.parametrize("size", [(1400, 900), (900, 1400), (1280, 1920), (1800, 2400), (3000, 700), (641, 641),
                                  (640, 640), (500, 300), (2000, 2000)])
def test_gundam_placeholders_match_official_rule(size):
    cols, rows = tile_grid(*size)
    expected = _official_count(1024, 640, cols, rows)
    assert page_placeholders("gundam", *size) == expected
    assert page_placeholders("page", *size) == expected
    assert num_image_placeholders(1024, 640, (cols, rows)) == 273 + ((10 * cols + 1) * 10 * rows if cols * rows > 1
                                                                      else 0)


def test_documented_gundam_examples_and_fixture_counts(reference_tensors):
    assert num_image_placeholders(1024, 640, (2, 3)) == 903
    assert num_image_placeholders(1024, 640, (3, 2)) == 893
    assert page_placeholders("tiny", 700, 500) == int(reference_tensors["a_num_image_tokens"]) == 73
    assert page_placeholders("gundam", 1400, 900) == int(reference_tensors["b_num_image_tokens"]) == 893


@pytest.mark.parametrize("side", [512, 640, 1024, 1280])
def test_official_patch_and_downsample_give_the_modes_token_count(side):
    """The exported processor_config.json tells engines the geometry that config.modes counts with."""
    pixels_per_token = OFFICIAL_PROCESSOR_CONFIG["patch_size"] * OFFICIAL_PROCESSOR_CONFIG["downsample_ratio"]
    assert vision_tokens_per_view(side) == (side // pixels_per_token) ** 2


def test_case_a_preprocessing_is_bit_exact(reference_tensors):
    raw = Image.fromarray(reference_tensors["a_raw_image_rgb_u8"].numpy())
    out = DeepSeekOCRImageProcessor.from_mode("tiny")(raw)
    assert out.global_view.dtype == torch.float32
    assert torch.equal(out.global_view, reference_tensors["a_pixel_values"])
    assert out.tiles.shape == (0, 3, 512, 512) and out.crop_grid == (1, 1) and out.num_placeholders == 73


def test_case_b_preprocessing_is_bit_exact(reference_tensors):
    raw = Image.fromarray(reference_tensors["b_raw_image_rgb_u8"].numpy())
    out = DeepSeekOCRImageProcessor.from_mode("gundam")(raw)
    assert out.crop_grid == (3, 2) and out.num_placeholders == 893
    assert torch.equal(out.global_view, normalize_pixels(reference_tensors["b_global_pixel_values_u8"]))
    assert torch.equal(out.tiles, normalize_pixels(reference_tensors["b_tile_pixel_values_u8"]))


def test_normalization_is_torchvision_exact():
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    expected = (u8.float().div(255) - torch.tensor(0.5)) / torch.tensor(0.5)  # ToTensor, then Normalize
    assert torch.equal(normalize_pixels(u8), expected)
    assert normalize_pixels(u8).min() == -1 and normalize_pixels(u8).max() == 1


def test_non_crop_modes_resize_small_views_and_pad_large_ones():
    page = Image.new("RGB", (300, 600), (255, 255, 255))
    small = DeepSeekOCRImageProcessor.from_mode("small")(page).global_view
    assert small.shape == (1, 3, 640, 640) and torch.all(small == 1)  # stretched: no gray bars
    base = DeepSeekOCRImageProcessor.from_mode("base")(page).global_view
    gray = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(base[0, :, :, 0], torch.tensor(gray)) and torch.all(base[0, :, :, 512] == 1)


def test_crop_mode_small_image_has_no_tiles_and_grayscale_is_converted():
    out = DeepSeekOCRImageProcessor.from_mode("gundam")(Image.new("L", (600, 400), 200))
    assert out.crop_grid == (1, 1) and out.tiles.shape == (0, 3, 640, 640)
    assert out.global_view.shape == (1, 3, 1024, 1024) and out.num_placeholders == 273


def test_tiles_are_cut_row_major():
    # 2 columns x 1 row: left half black, right half white.
    page = Image.new("RGB", (1400, 700), (0, 0, 0))
    page.paste((255, 255, 255), (700, 0, 1400, 700))
    out = DeepSeekOCRImageProcessor.from_mode("gundam")(page)
    assert out.crop_grid == (2, 1)
    # Away from the seam (bicubic rings over a few pixels there).
    assert torch.all(out.tiles[0][..., :630] == -1) and torch.all(out.tiles[1][..., 10:] == 1)


@pytest.mark.parametrize("mode", sorted(RESOLUTION_MODES))
def test_processor_dict_roundtrip(mode):
    processor = DeepSeekOCRImageProcessor.from_mode(mode, max_tiles=6)
    again = DeepSeekOCRImageProcessor.from_dict(processor.to_dict())
    assert again.to_dict() == processor.to_dict()
    assert again.to_dict()["max_tiles"] == 6
    assert again.crop_mode == RESOLUTION_MODES[mode].crop_mode
