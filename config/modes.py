"""DeepSeek-OCR's resolution modes and tiling geometry: facts of the model that rendering and the model share.

Every 16x16 pixel patch goes through SAM, then two stride-2 convolutions (16x fewer tokens), so a square view of
side S gives (S/64)^2 vision tokens. Gundam mode adds 640x640 tiles of the page to one global view; the tile grid
is the one the official `dynamic_preprocess` picks for the page's aspect ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ModeName = Literal["tiny", "small", "base", "large", "gundam", "page"]
TILE_SIZE = 640
MAX_TILES = 9  # official HF infer(); the official vLLM path uses 6
MIN_TILES = 2
# The official decoder's context (its max_position_embeddings): what prepare counts records against, before any
# model is chosen; training and inference read the context of the model they run.
DECODER_CONTEXT = 8192


@dataclass(frozen=True)
class ResolutionMode:
    page_width: int  # pixels of a rendered page
    page_height: int
    base_size: int  # side of the global view the encoder sees
    crop_mode: bool  # True: the page is also cut into TILE_SIZE tiles (gundam)


RESOLUTION_MODES: dict[str, ResolutionMode] = {
    "tiny": ResolutionMode(512, 512, 512, False),
    "small": ResolutionMode(640, 640, 640, False),
    "base": ResolutionMode(1024, 1024, 1024, False),
    "large": ResolutionMode(1280, 1280, 1280, False),
    # A 2x3-tile portrait page: 6 tiles + the global view.
    "gundam": ResolutionMode(1280, 1920, 1024, True),
    # The reference README's 1800x2400 portrait page, read in gundam (tiled) mode.
    "page": ResolutionMode(1800, 2400, 1024, True),
}


# A page read at a lower mode than it was rendered for ("fit", for long documents) is shrunk to that mode's view;
# its text must stay at least this many pixels high, the smallest size at which OCR still reads nearly every
# character (the legibility by font size in docs/data.md).
MIN_LEGIBLE_FONT_PX = 9
# The mode a page is read at when its own does not fit: the next smaller global view (a tiled mode drops its
# tiles first).
MODE_DOWN = {"page": "base", "gundam": "base", "large": "base", "base": "small", "small": "tiny"}


def tile_count(grid) -> int:
    """Tiles of a (columns, rows) grid: (1, 1) means no tiles, as in the official code."""
    cols, rows = grid
    return cols * rows if cols * rows > 1 else 0


def vision_tokens(global_size: int, tile_size: int, grid) -> int:
    """Vision tokens (the paper's count, without layout positions) of a global view plus its grid of tiles."""
    return vision_tokens_per_view(global_size) + tile_count(grid) * vision_tokens_per_view(tile_size)


def vision_tokens_per_view(side: int) -> int:
    """Valid vision tokens of one square view (without newline/separator positions): 64, 100, 256, 400."""
    return (side // 64) ** 2


def tokens_per_side(side: int) -> int:
    """Vision tokens along one side of a square view of `side` pixels."""
    return math.isqrt(vision_tokens_per_view(side))


def layout_placeholders(side_tokens: int, tile_side_tokens: int, crop_grid: tuple[int, int] = (1, 1)) -> int:
    """Placeholder tokens of one image from its tokens per side: q*(q+1)+1 for a global view of q x q tokens
    (a newline after each row, a separator at the end), plus (qt*cols+1)*(qt*rows) for a (cols, rows) grid of
    qt x qt-token tiles; (1, 1) means no tiles (and tile_side_tokens is not read)."""
    q, qt = side_tokens, tile_side_tokens
    cols, rows = crop_grid
    return q * (q + 1) + 1 + ((qt * cols + 1) * (qt * rows) if tile_count(crop_grid) else 0)


def tile_grid(width: int, height: int, min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES,
              tile_size: int = TILE_SIZE) -> tuple[int, int]:
    """(columns, rows) of tiles for an image, as the official `dynamic_preprocess` chooses them.

    Images no larger than one tile on both sides get no tiles: (1, 1). Otherwise the grid with
    min_tiles <= columns*rows <= max_tiles whose aspect ratio is closest to the image's wins; on a tie, a larger
    grid is taken only when the image has more than half the pixels of that grid.
    """
    if width <= tile_size and height <= tile_size:
        return (1, 1)
    aspect = width / height
    grids = sorted(
        {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if min_tiles <= i * j <= max_tiles},
        key=lambda g: g[0] * g[1],
    )
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best
