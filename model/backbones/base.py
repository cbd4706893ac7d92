"""What a backbone is: everything that differs between the vision-language models this project fine-tunes, behind
one interface, so that training, generation, the summarizer, the API, the vision cache, the llama.cpp engine and
the runner never ask which model they hold.

A backbone module (deepseek_ocr.py, deepseek_ocr2.py) defines one `Backbone` and is registered in `__init__.py`.
It answers, from a folder's config.json alone, whether the folder is its own and in which layout; it builds its
presets and loads its folders; it gives the page processor of each render mode (page images -> pixels, tiles and
placeholder counts, the positions a page takes, which the context budget counts); it says which module is the
frozen vision encoder, what LoRA targets, and how a batch of pages becomes decoder rows (the `get_image_features`
seam transformers' vision-language models share).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Literal, Optional

import torch

# "project": saved by `save_pretrained` (this project's, or transformers' own class); "official": the layout of
# the model's official repository (config.json with `language_config`, official weight names).
Layout = Literal["project", "official"]


@contextmanager
def seeded(dtype: torch.dtype):
    """Modules built inside get the same random weights in every process, created in `dtype`."""
    from transformers.modeling_utils import local_torch_dtype

    with torch.random.fork_rng(devices=[]), local_torch_dtype(dtype):
        torch.manual_seed(0)
        yield


class Backbone(ABC):
    name: str  # as an experiment arm's "backbone" names it
    title: str  # for model cards and logs
    presets: tuple[str, ...] = ()  # names of its random-weight presets, built in memory
    # Hub ids whose architecture it knows without the hub (not their weights), and the layout of each.
    hub_ids: dict[str, Layout] = {}
    model_types: tuple[str, ...] = ()  # `config.model_type` of the models it loads
    encoder_title: str  # what its frozen vision encoder is, in words
    # Parameter-name prefixes of its parts (model.params.parameter_counts): the vision parts, "projector",
    # "embed_tokens", "decoder_layers" and "lm_head".
    parameter_parts: dict[str, tuple[str, ...]]
    # Whether training may cache its encoder's output per page (training/vision_cache.py).
    caches_vision_features: bool = False

    @abstractmethod
    def recognize(self, config: dict) -> Optional[Layout]:
        """The layout of a folder whose config.json is `config`, or None when the folder is not this backbone's."""

    @abstractmethod
    def config(self, layout: Layout, path: Optional[Path], name: str):
        """The architecture (a transformers config) without reading a weight. `path` is None for a preset or an
        offline hub id, which `name` then names."""

    @abstractmethod
    def load(self, layout: Layout, path: Optional[Path], name: str, dtype: torch.dtype, attn_implementation: str,
             experts_implementation: Optional[str], vision_only: bool = False):
        """The model in eval mode on the CPU. `vision_only`: without its decoder and lm_head, for an engine that
        runs the decoder itself."""

    @abstractmethod
    def build(self, config, dtype: torch.dtype = torch.float32):
        """The model of `config` with seeded random weights (`seeded`): a preset, or a real-size benchmark model."""

    @abstractmethod
    def build_empty(self, config, dtype: torch.dtype):
        """The model of `config` without initializing a weight (for a meta-device dry run or a checkpoint load)."""

    @abstractmethod
    def page_processor(self, mode: str):
        """Page image -> ProcessedImage (global view, tiles, grid, placeholders) for a render mode; it also counts
        a page's positions and vision tokens from its size and batches processed pages into model inputs."""

    @abstractmethod
    def page_processor_from_dict(self, data: dict):
        """The page processor a model folder saved (`to_dict`)."""

    @abstractmethod
    def encoder(self, model) -> torch.nn.Module:
        """The vision encoder: the part kept frozen, cast to the encoder precision, and whose output is cached."""

    @abstractmethod
    def freeze_vision(self, model, train_projector: bool = False) -> None:
        """Freeze the vision encoder (and, unless `train_projector`, what maps its output into the decoder)."""

    @abstractmethod
    def lora_pattern(self, targets: Iterable[str]) -> str:
        """The regular expression (PEFT's `target_modules`) of the decoder layers' projections named `targets`:
        never the vision encoder's, which may have projections of the same names."""

    @abstractmethod
    def decoder_modules(self, model) -> tuple[torch.nn.Module, ...]:
        """The decoder and lm_head, frozen under LoRA."""

    @abstractmethod
    def image_features(self, model, batch: dict) -> torch.Tensor:
        """The decoder rows of a batch's pages, in the order of their placeholders in the prompt
        ([placeholders, hidden]), from the page processor's model inputs."""

    @abstractmethod
    def official_state_dict(self, model) -> dict[str, torch.Tensor]:
        """The model's weights under its official checkpoint's names: what vLLM, SGLang and llama.cpp's converter
        read (`model.export`)."""

    @abstractmethod
    def official_config(self, config, torch_dtype: str) -> dict:
        """The official config.json of a model of `config` (the architecture llama.cpp's converter maps)."""

    @abstractmethod
    def maps_projector(self, official_config: dict) -> bool:
        """Whether llama.cpp's projector converter can write this model's mmproj GGUF (it assumes real sizes)."""

    # The vision-feature cache (training/vision_cache.py), for a backbone that `caches_vision_features`: each page's
    # pixels, the encoder's output for a batch of them, and model inputs that carry that output instead of pixels.
    def page_views(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each page's (global view, tiles) in a batch of model inputs, in batch order."""
        raise NotImplementedError(f"{self.title} has no vision-feature cache")

    def encode_views(self, model, global_views: torch.Tensor, tiles: Optional[torch.Tensor]
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The frozen encoder's output (before what maps it into the decoder, which may train) for pages' views."""
        raise NotImplementedError(f"{self.title} has no vision-feature cache")

    def with_encoded(self, batch: dict, global_feats: torch.Tensor, tiles: Optional[torch.Tensor]) -> dict:
        """`batch`'s model inputs with its pages' encoder output in place of their pixels."""
        raise NotImplementedError(f"{self.title} has no vision-feature cache")
