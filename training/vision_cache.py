"""Cache of DeepEncoder outputs per page, so epochs after the first skip the frozen encoder.

What is cached is the encoder output *before* the projector (`model.encode_images`), so a trainable projector
still learns. Keys: the page's pixel content (`training.collator.page_key`) and, on disk, a fingerprint of the
encoder weights and dtype, so changed weights never reuse stale features.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from config.modes import tile_count
from model.modeling import VisionFeatures


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """Hash of every encoder tensor (names, shapes, dtypes, values): any weight change gives a new fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # Raw bytes through a uint8 view: works for bfloat16, which numpy cannot hold.
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class VisionFeatureCache:
    """Per-page encoder features in memory (`folder=None`) or under `folder/<encoder fingerprint>/`.

    Features are kept on the CPU (GPU memory goes to training) and moved to the model's device per batch.
    `misses` counts pages that went through the encoder, `hits` pages served from the cache.
    """

    def __init__(self, model, folder: Optional[str | os.PathLike] = None):
        if any(p.requires_grad for p in model.vision_encoder.parameters()):
            raise ValueError("the vision cache needs a frozen encoder: its features would go stale as it trains")
        self.fingerprint = encoder_fingerprint(model.vision_encoder)
        self.folder = Path(folder) / self.fingerprint if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def _load(self, key: str) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        if self.folder is None:
            return self._memory.get(key)
        path = self.folder / f"{key}.pt"
        return tuple(torch.load(path, weights_only=True)) if path.is_file() else None

    def _store(self, key: str, global_feats: torch.Tensor, tiles: torch.Tensor) -> None:
        if self.folder is None:
            self._memory[key] = (global_feats, tiles)
            return
        # Atomic write: a crash or a second process never leaves a half-written feature file behind.
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        torch.save((global_feats, tiles), tmp)
        os.replace(tmp, self.folder / f"{key}.pt")

    @torch.no_grad()
    def features(self, model, page_keys: Sequence[str], pixel_values: torch.Tensor,
                 pixel_values_tiles: Optional[torch.Tensor], images_spatial_crop: torch.Tensor) -> VisionFeatures:
        """The batch's `VisionFeatures`, running the encoder only on the pages not cached yet."""
        tiles_per_page = [tile_count(grid) for grid in images_spatial_crop.tolist()]
        starts = [sum(tiles_per_page[:i]) for i in range(len(tiles_per_page))]
        found = {key: self._load(key) for key in dict.fromkeys(page_keys)}
        first = {}
        for index, key in enumerate(page_keys):
            first.setdefault(key, index)  # a page repeated in one batch is encoded once
        missing = [index for key, index in first.items() if found[key] is None]
        if missing:
            tile_ids = [t for i in missing for t in range(starts[i], starts[i] + tiles_per_page[i])]
            new = model.encode_images(pixel_values[missing], pixel_values_tiles[tile_ids] if tile_ids else None)
            offset = 0
            for row, page in enumerate(missing):
                n = tiles_per_page[page]
                tiles = new.tiles[offset:offset + n] if n else torch.zeros(0)
                offset += n
                found[page_keys[page]] = (new.global_feats[row:row + 1].cpu(), tiles.cpu())
                self._store(page_keys[page], *found[page_keys[page]])
        self.misses += len(missing)
        self.hits += len(page_keys) - len(missing)

        device = pixel_values.device
        global_feats = torch.cat([found[key][0] for key in page_keys]).to(device)
        tile_parts = [found[key][1] for key, n in zip(page_keys, tiles_per_page) if n]
        tiles = torch.cat(tile_parts).to(device) if tile_parts else None
        return VisionFeatures(global_feats, tiles)
