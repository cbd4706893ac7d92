"""data/ counts a page's vision tokens and decoder positions with config/geometry.py (it may not import the model):
for every backbone, mode and page size, the numbers its page processor gives (DeepSeek-OCR-2's tiles chosen by
transformers' own processor)."""
from __future__ import annotations

import pytest

from config.geometry import PAGE_GEOMETRY
from model import backbones

SIZES = [(512, 512), (640, 641), (700, 700), (769, 768), (1024, 1024), (1280, 1280), (1280, 1920), (1800, 2400),
         (2400, 900), (300, 5000), (1500, 1200)]


def test_every_registered_backbone_has_a_geometry_and_no_other():
    assert set(backbones.BACKBONES) == set(PAGE_GEOMETRY)


@pytest.mark.parametrize("name", list(PAGE_GEOMETRY))
def test_geometry_counts_a_page_as_the_backbones_processor_does(name):
    backbone, geometry = backbones.named(name), PAGE_GEOMETRY[name]
    for mode in geometry.views:
        processor = backbone.page_processor(mode)
        for size in SIZES:
            grid = processor.crop_grid(*size)
            assert geometry.grid(mode, *size) == grid, (mode, size)
            assert geometry.positions(mode, *size) == processor.num_placeholders(grid), (mode, size)
            assert geometry.vision_tokens(mode, *size) == processor.vision_tokens(*size), (mode, size)


def test_deepseek_ocr2_reads_a_page_as_transformers_own_processor_does():
    """Independent of this project's page processor (which takes its tile limits and counts from the geometry):
    transformers' processor at its own defaults, DeepSeek-OCR-2's (a 1024 px view, 768 px tiles, 2 to 6 of them),
    counting the image tokens it puts in the prompt."""
    from PIL import Image
    from transformers import DeepseekOcr2ImageProcessorPil, DeepseekOcr2Processor

    from config.modes import tile_count
    from data.tokens import IMAGE_TOKEN, IMAGE_TOKEN_ID
    from model.tokenizer import load_tokenizer

    processor = DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=load_tokenizer())
    geometry = PAGE_GEOMETRY["deepseek-ocr-2"]
    for size in SIZES:
        out = processor(images=[Image.new("RGB", size, "white")], text=IMAGE_TOKEN + "\nSummarize.",
                        return_tensors="pt")
        assert tile_count(geometry.grid("gundam", *size)) == int(out["num_local_patches"][0]), size
        assert geometry.positions("gundam", *size) == int((out["input_ids"] == IMAGE_TOKEN_ID).sum()), size
