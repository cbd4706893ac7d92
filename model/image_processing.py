"""DeepSeek-OCR image preprocessing, reproducing the official `infer()` bit for bit.

- Non-crop modes (tiny/small/base/large): views of side <= 640 are resized straight to the square (aspect ratio
  NOT kept); larger views are letterboxed with `ImageOps.pad` and gray (127,127,127) bars.
- Crop mode (gundam/page): the global view is padded to `base_size`; pages larger than one tile on some side are
  also resized to (cols*640, rows*640) and cut row-major into 640x640 tiles, with the official grid rule.
- Pixels: ToTensor then Normalize(mean 0.5, std 0.5), i.e. float32 (u8/255 - 0.5)/0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

# The layout of placeholders (tokens per side, newlines, separator) lives in config.modes, where data counts
# positions too; model.modeling reads it from here.
from config.modes import (
    MAX_TILES,
    MIN_TILES,
    RESOLUTION_MODES,
    TILE_SIZE,
    layout_placeholders,
    tile_count,
    tile_grid,
    tokens_per_side,
    vision_tokens,
)

PAD_COLOR = (127, 127, 127)  # int(0.5 * 255) per channel, as the official code computes it
DIRECT_RESIZE_MAX = 640  # non-crop views up to this side are resized, larger ones padded


def num_image_placeholders(base_size: int, image_size: int, crop_grid: tuple[int, int] = (1, 1)) -> int:
    """Placeholder tokens of one image: a global view of side `base_size` and a grid of `image_size` tiles.

    73/111/273/421 for 512/640/1024/1280 views; gundam 1024/640 with 3x2 tiles: 893.
    """
    return layout_placeholders(tokens_per_side(base_size), tokens_per_side(image_size), crop_grid)


def normalize_pixels(chw_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [-1, 1], exactly as torchvision's ToTensor + Normalize(0.5, 0.5)."""
    return (chw_u8.to(torch.float32) / 255 - 0.5) / 0.5


def pil_to_chw_u8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


@dataclass
class ProcessedImage:
    global_view: torch.Tensor  # [1, 3, B, B] float32
    tiles: torch.Tensor  # [n, 3, T, T] float32, n = 0 without tiles
    crop_grid: tuple[int, int]  # (cols, rows); (1, 1) = no tiles
    num_placeholders: int


class DeepSeekOCRImageProcessor:
    """Turns a page image into DeepSeek-OCR's global view, tiles, tile grid and placeholder count."""

    def __init__(self, base_size: int = 1024, image_size: int = TILE_SIZE, crop_mode: bool = True,
                 max_tiles: int = MAX_TILES, min_tiles: int = MIN_TILES):
        self.base_size = base_size
        self.image_size = image_size
        self.crop_mode = crop_mode
        self.max_tiles = max_tiles
        self.min_tiles = min_tiles

    @classmethod
    def from_mode(cls, mode: str, max_tiles: int = MAX_TILES) -> "DeepSeekOCRImageProcessor":
        geometry = RESOLUTION_MODES[mode]
        if geometry.crop_mode:
            return cls(geometry.base_size, TILE_SIZE, crop_mode=True, max_tiles=max_tiles)
        return cls(geometry.base_size, geometry.base_size, crop_mode=False, max_tiles=max_tiles)

    def to_dict(self) -> dict:
        return {"base_size": self.base_size, "image_size": self.image_size, "crop_mode": self.crop_mode,
                "max_tiles": self.max_tiles, "min_tiles": self.min_tiles}

    @classmethod
    def from_dict(cls, data: dict) -> "DeepSeekOCRImageProcessor":
        return cls(**data)

    @property
    def global_size(self) -> int:
        """Side of the global view: `base_size` in crop mode; the official non-crop path uses `image_size`."""
        return self.base_size if self.crop_mode else self.image_size

    def crop_grid(self, width: int, height: int) -> tuple[int, int]:
        if not self.crop_mode:
            return (1, 1)
        return tile_grid(width, height, self.min_tiles, self.max_tiles, self.image_size)

    @property
    def mode(self) -> str:
        """The render mode these settings read pages at (a tiled one is named gundam)."""
        return "gundam" if self.crop_mode else next(
            name for name, geometry in RESOLUTION_MODES.items()
            if not geometry.crop_mode and geometry.base_size == self.global_size)

    def num_placeholders(self, crop_grid: tuple[int, int] = (1, 1)) -> int:
        return num_image_placeholders(self.global_size, self.image_size, crop_grid)

    def vision_tokens(self, width: int, height: int) -> int:
        """The paper's vision-token count of a page of this size (layout positions not counted)."""
        return vision_tokens(self.global_size, self.image_size, self.crop_grid(width, height))

    @staticmethod
    def page_views(batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each page's (global view [3, B, B], tiles [n, 3, T, T]) in a batch of model inputs, in batch order."""
        views, start = [], 0
        for page, grid in enumerate(batch["images_spatial_crop"].tolist()):
            n_tiles = tile_count(grid)
            views.append((batch["pixel_values"][page], batch["pixel_values_tiles"][start:start + n_tiles]))
            start += n_tiles
        return views

    @staticmethod
    def batch(pages: list[ProcessedImage]) -> dict[str, torch.Tensor]:
        """The model inputs of a batch's pages (in prompt order)."""
        return {"pixel_values": torch.cat([page.global_view for page in pages]),
                "pixel_values_tiles": torch.cat([page.tiles for page in pages]),
                "images_spatial_crop": torch.tensor([page.crop_grid for page in pages], dtype=torch.long)}

    def __call__(self, image: Image.Image) -> ProcessedImage:
        image = image.convert("RGB")
        side = self.global_size
        grid = self.crop_grid(*image.size)
        if not self.crop_mode and side <= DIRECT_RESIZE_MAX:
            image = image.resize((side, side), Image.Resampling.BICUBIC)
        global_view = ImageOps.pad(image, (side, side), method=Image.Resampling.BICUBIC, color=PAD_COLOR)

        tile = self.image_size
        tiles = torch.zeros(0, 3, tile, tile, dtype=torch.uint8)
        cols, rows = grid
        if tile_count(grid):
            resized = pil_to_chw_u8(image.resize((cols * tile, rows * tile), Image.Resampling.BICUBIC))
            # [3, rows*T, cols*T] -> [rows*cols, 3, T, T], row-major (tile k = column k % cols, row k // cols).
            tiles = resized.reshape(3, rows, tile, cols, tile).permute(1, 3, 0, 2, 4).reshape(-1, 3, tile, tile)
        return ProcessedImage(
            global_view=normalize_pixels(pil_to_chw_u8(global_view))[None],
            tiles=normalize_pixels(tiles),
            crop_grid=grid,
            num_placeholders=self.num_placeholders(grid),
        )
