"""What a page costs each backbone's decoder, known without a model or torch: data/ counts a prepared record's vision
tokens and decoder positions with it before any model is chosen (data/ may not import model/).

Both backbones encode a square view of side S into (S/64)^2 vision tokens and may add a grid of tiles chosen as the
official `dynamic_preprocess` chooses it; they differ in their views, their tiles and the layout of the placeholders
in the prompt. Each backbone's page processor (model/backbones) reads images of any size and is the authority: a
test holds these counts equal to it for every mode and many page sizes (tests/model/test_page_geometry.py). A new
backbone declares its geometry here, beside its module in model/backbones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.errors import UserError
from config.modes import (
    MAX_TILES,
    MIN_TILES,
    RESOLUTION_MODES,
    TILE_SIZE,
    layout_placeholders,
    tile_count,
    tile_grid,
    tokens_per_side,
    vision_tokens_per_view,
)


@dataclass(frozen=True)
class PageGeometry:
    title: str
    views: dict[str, tuple[int, bool]]  # render mode -> (global view side, whether larger pages are also tiled)
    tile_size: int
    min_tiles: int
    max_tiles: int
    # DeepSeek-OCR puts a newline position after each row of a view's tokens and one separator after the page;
    # DeepSeek-OCR-2 lays out the tiles' tokens, then the global view's, then one separator.
    row_newlines: bool

    def view(self, mode: str) -> tuple[int, bool]:
        if mode not in self.views:
            sides = " and ".join(str(side) for side in sorted({side for side, _ in self.views.values()}))
            raise UserError(f"{self.title} reads pages at {', '.join(self.views)}, not {mode!r} (its views are "
                            f"{sides} px)")
        return self.views[mode]

    def grid(self, mode: str, width: int, height: int) -> tuple[int, int]:
        """(columns, rows) of tiles of a page of this size in `mode`; (1, 1): none."""
        _, tiled = self.view(mode)
        return tile_grid(width, height, self.min_tiles, self.max_tiles, self.tile_size) if tiled else (1, 1)

    def grid_vision_tokens(self, mode: str, grid: tuple[int, int]) -> int:
        """The encoder's tokens for a page read with this grid (layout positions not counted)."""
        side, _ = self.view(mode)
        return vision_tokens_per_view(side) + tile_count(grid) * vision_tokens_per_view(self.tile_size)

    def grid_positions(self, mode: str, grid: tuple[int, int]) -> int:
        """Decoder positions of a page read with this grid: its vision tokens with their layout."""
        side, _ = self.view(mode)
        if self.row_newlines:
            return layout_placeholders(tokens_per_side(side), tokens_per_side(self.tile_size), grid)
        return self.grid_vision_tokens(mode, grid) + 1

    def vision_tokens(self, mode: str, width: int, height: int) -> int:
        return self.grid_vision_tokens(mode, self.grid(mode, width, height))

    def positions(self, mode: str, width: int, height: int) -> int:
        return self.grid_positions(mode, self.grid(mode, width, height))


PAGE_GEOMETRY: dict[str, PageGeometry] = {
    "deepseek-ocr": PageGeometry("DeepSeek-OCR", {m: (r.base_size, r.crop_mode) for m, r in RESOLUTION_MODES.items()},
                                 TILE_SIZE, MIN_TILES, MAX_TILES, row_newlines=True),
    # Views of 768 px (144 tokens) or 1024 px (256), tiles of 768 px, 2-6 of them; no 512 px view, so no tiny mode.
    "deepseek-ocr-2": PageGeometry("DeepSeek-OCR-2", {"small": (768, False), "base": (1024, False),
                                                      "large": (1024, True), "gundam": (1024, True),
                                                      "page": (1024, True)},
                                   768, 2, 6, row_newlines=False),
}
BackboneName = Literal[tuple(PAGE_GEOMETRY)]  # the names a setting accepts: the registry's
DEFAULT_BACKBONE = "deepseek-ocr"


def page_geometry(backbone: str) -> PageGeometry:
    if backbone not in PAGE_GEOMETRY:
        raise UserError(f"unknown backbone {backbone!r}; this version knows {', '.join(PAGE_GEOMETRY)}")
    return PAGE_GEOMETRY[backbone]
