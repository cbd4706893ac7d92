"""Cache of the frozen encoder's outputs per page, so epochs after the first skip it.

What is cached is the encoder output *before* the projector (the backbone's `encode_views`), so a trainable
projector still learns. Keys: the page's pixel content (`training.collator.page_key`) and, on disk, a fingerprint of the
encoder weights and dtype, so changed weights never reuse stale features.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

from model import backbones


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
        self.backbone = backbones.of_model(model)
        encoder = self.backbone.encoder(model)
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError("the vision cache needs a frozen encoder: its features would go stale as it trains")
        self.fingerprint = encoder_fingerprint(encoder)
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
    def model_inputs(self, model, batch: dict) -> dict:
        """`batch`'s model inputs (its `page_keys` taken out) with each page's encoder output in place of its pixels,
        running the encoder only on the pages not cached yet."""
        batch = dict(batch)
        page_keys = batch.pop("page_keys")
        views = self.backbone.page_views(batch)
        found = {key: self._load(key) for key in dict.fromkeys(page_keys)}
        first = {}
        for index, key in enumerate(page_keys):
            first.setdefault(key, index)  # a page repeated in one batch is encoded once
        missing = [index for key, index in first.items() if found[key] is None]
        if missing:
            tiles = [views[i][1] for i in missing]
            global_feats, tile_feats = self.backbone.encode_views(
                model, torch.stack([views[i][0] for i in missing]), torch.cat(tiles) if sum(map(len, tiles)) else None)
            offset = 0
            for row, page in enumerate(missing):
                n = len(tiles[row])
                found[page_keys[page]] = (global_feats[row:row + 1].cpu(),
                                          tile_feats[offset:offset + n].cpu() if n else torch.zeros(0))
                offset += n
                self._store(page_keys[page], *found[page_keys[page]])
        self.misses += len(missing)
        self.hits += len(page_keys) - len(missing)

        device = views[0][0].device
        global_feats = torch.cat([found[key][0] for key in page_keys]).to(device)
        tile_parts = [found[key][1] for key, (_, tiles) in zip(page_keys, views) if len(tiles)]
        return self.backbone.with_encoded(batch, global_feats, torch.cat(tile_parts).to(device) if tile_parts else None)
