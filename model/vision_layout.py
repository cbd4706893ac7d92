"""Arrange one image's projected vision features into DeepSeek-OCR's placeholder sequence.

Order (official `DeepseekOCRModel.forward`, although the config says `global_view_pos: head`): the tiles as one
(rows*qt) x (cols*qt) token grid, each grid row followed by `image_newline`; then the global q x q grid, each row
followed by `image_newline`; then one `view_separator`.
"""
from __future__ import annotations

import torch


def _grid_with_newlines(grid: torch.Tensor, image_newline: torch.Tensor) -> torch.Tensor:
    """[H, W, D] -> [H * (W + 1), D]: every row of tokens followed by the newline embedding."""
    newline = image_newline.to(grid.dtype).expand(grid.shape[0], 1, grid.shape[-1])
    return torch.cat([grid, newline], dim=1).reshape(-1, grid.shape[-1])


def layout_vision_embeddings(
    global_feats: torch.Tensor,
    tile_feats: torch.Tensor | None,
    grid: tuple[int, int],
    image_newline: torch.Tensor,
    view_separator: torch.Tensor,
) -> torch.Tensor:
    """global_feats [q*q, D], tile_feats [cols*rows, qt*qt, D] or None, grid (cols, rows) -> [placeholders, D].

    Tile k sits at column k % cols, row k // cols of the tile grid.
    """
    dim = global_feats.shape[-1]
    q = round(global_feats.shape[0] ** 0.5)
    parts = []
    if tile_feats is not None and tile_feats.shape[0] > 0:
        cols, rows = grid
        if tile_feats.shape[0] != cols * rows:
            raise ValueError(f"{tile_feats.shape[0]} tiles do not fill a {cols}x{rows} grid")
        qt = round(tile_feats.shape[1] ** 0.5)
        # [rows, cols, qt, qt, D] -> [rows, qt, cols, qt, D]: token rows run across all tiles of a tile row.
        tiles = tile_feats.reshape(rows, cols, qt, qt, dim).permute(0, 2, 1, 3, 4).reshape(rows * qt, cols * qt, dim)
        parts.append(_grid_with_newlines(tiles, image_newline))
    parts.append(_grid_with_newlines(global_feats.reshape(q, q, dim), image_newline))
    parts.append(view_separator.to(global_feats.dtype).reshape(1, dim))
    return torch.cat(parts, dim=0)
