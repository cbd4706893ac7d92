"""DeepSeek-OCR (October 2025): the DeepEncoder (SAM ViT-B, a 16x convolutional compressor, CLIP-L) and the
DeepSeek-3B-MoE decoder, in this project's own files (model/modeling.py, model/deep_encoder.py, held to the
official code by the parity tests).

Layouts: "project", this project's `save_pretrained` (`model_type` deepseek_ocr_summarizer); "official", the
`deepseek-ai/DeepSeek-OCR` repository (`deepseek_vl_v2`, `language_config`), converted key by key
(model/official_layout.py). Pages: 64 px of view per vision token, 640 px tiles (model/image_processing.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import torch

from model.backbones.base import Backbone, Layout, seeded
from model.configuration import OFFICIAL_HUB_ID, OFFICIAL_MODEL_TYPE, TINY_PRESET, DeepSeekOCRConfig
from model.image_processing import DeepSeekOCRImageProcessor
from model.params import PARTS, freeze_vision_encoder


class DeepSeekOCR(Backbone):
    name = "deepseek-ocr"
    title = "DeepSeek-OCR"
    presets = (TINY_PRESET,)
    hub_ids = {OFFICIAL_HUB_ID: "official"}
    model_types = (DeepSeekOCRConfig.model_type,)
    encoder_title = "DeepEncoder (SAM + CLIP)"
    parameter_parts = PARTS
    caches_vision_features = True

    def recognize(self, config: dict) -> Optional[Layout]:
        if config.get("model_type") == DeepSeekOCRConfig.model_type:
            return "project"
        if config.get("model_type") == OFFICIAL_MODEL_TYPE or "language_config" in config:
            return "official"
        return None

    def config(self, layout: Layout, path: Optional[Path], name: str) -> DeepSeekOCRConfig:
        if path is None:  # a preset, or the official hub id offline: DeepSeekOCRConfig() is its architecture
            return DeepSeekOCRConfig.preset(name) if name in self.presets else DeepSeekOCRConfig()
        if layout == "project":
            return DeepSeekOCRConfig.from_pretrained(path)
        return DeepSeekOCRConfig.from_official_config(json.loads((path / "config.json").read_text()))

    def load(self, layout: Layout, path: Optional[Path], name: str, dtype: torch.dtype, attn_implementation: str,
             experts_implementation: Optional[str], vision_only: bool = False):
        from model.modeling import DeepSeekOCRForConditionalGeneration
        from model.official_layout import is_official_vision_key, load_official_state_dict, read_safetensors_folder

        if layout == "project" and path is not None:
            model = DeepSeekOCRForConditionalGeneration.from_pretrained(
                path, dtype=dtype, attn_implementation=attn_implementation,
                experts_implementation=experts_implementation,
                **({"num_hidden_layers": 0} if vision_only else {}))
        else:
            config = self.config(layout, path, name)
            config._attn_implementation = attn_implementation
            config._experts_implementation = experts_implementation
            if path is None:  # a preset, built whole so that its seeded vision weights are its own
                model = self.build(config).to(dtype)
            else:
                if vision_only:
                    config.num_hidden_layers = 0
                model = self.build_empty(config, dtype)
                keep = is_official_vision_key if vision_only else None
                load_official_state_dict(model, read_safetensors_folder(path, keep), vision_only)
        if vision_only:
            # The engine that runs the decoder holds its own (the token embeddings alone are 0.66 GB in bfloat16 at
            # real size); calling the torch decoder now fails at once instead of computing with unloaded weights.
            model.language_model = model.lm_head = None
        return model.eval()

    def build(self, config, dtype: torch.dtype = torch.float32):
        from model.modeling import DeepSeekOCRForConditionalGeneration

        with seeded(dtype):
            return DeepSeekOCRForConditionalGeneration(config)

    def build_empty(self, config, dtype: torch.dtype):
        from model.official_layout import build_empty_model

        return build_empty_model(config, dtype)

    def page_processor(self, mode: str) -> DeepSeekOCRImageProcessor:
        return DeepSeekOCRImageProcessor.from_mode(mode)

    def page_processor_from_dict(self, data: dict) -> DeepSeekOCRImageProcessor:
        return DeepSeekOCRImageProcessor.from_dict(data)

    def encoder(self, model) -> torch.nn.Module:
        return model.vision_encoder

    def freeze_vision(self, model, train_projector: bool = False) -> None:
        freeze_vision_encoder(model, train_projector)

    def lora_pattern(self, targets: Iterable[str]) -> str:
        # Anchored to the decoder: CLIP in the frozen encoder also has q_proj/k_proj/v_proj.
        return rf"language_model\.layers\.\d+\.(?:.*\.)?(?:{'|'.join(targets)})"

    def decoder_modules(self, model) -> tuple[torch.nn.Module, ...]:
        return model.language_model, model.lm_head

    def image_features(self, model, batch: dict) -> torch.Tensor:
        features = model.encode_images(batch["pixel_values"], batch.get("pixel_values_tiles"))
        return model.image_embeddings(features, batch["images_spatial_crop"])

    def page_views(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return DeepSeekOCRImageProcessor.page_views(batch)

    def encode_views(self, model, global_views: torch.Tensor, tiles: Optional[torch.Tensor]
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        features = model.encode_images(global_views, tiles)
        return features.global_feats, features.tiles

    def with_encoded(self, batch: dict, global_feats: torch.Tensor, tiles: Optional[torch.Tensor]) -> dict:
        from model.modeling import VisionFeatures

        inputs = {key: value for key, value in batch.items() if key not in ("pixel_values", "pixel_values_tiles")}
        return {**inputs, "vision_features": VisionFeatures(global_feats, tiles)}

    def official_state_dict(self, model) -> dict[str, torch.Tensor]:
        from model.official_layout import to_official_state_dict

        return to_official_state_dict(model.state_dict(), model.config.vision)

    def official_config(self, config, torch_dtype: str) -> dict:
        return config.to_official_config(torch_dtype)

    def maps_projector(self, official_config: dict) -> bool:
        # The converter maps SAM's four neck modules by block index: at least four blocks (the real model has 12,
        # the tiny preset 2).
        sam = (official_config.get("vision_config", {}).get("width", {}).get("sam_vit_b") or {})
        return sam.get("layers", 12) >= 4


BACKBONE = DeepSeekOCR()
