"""DeepSeek-OCR-2 (January 2026): DeepSeek-OCR's decoder behind a Qwen2-based encoder ("visual causal flow": SAM's
patches read by a small causal Qwen2 through learned queries), run by transformers' own classes: the model is
`DeepseekOcr2ForConditionalGeneration`, pages go through `DeepseekOcr2ImageProcessorPil` (Pillow, so pixels do not
depend on whether torchvision is installed). Nothing of the network is written here.

What differs from DeepSeek-OCR, and lives here:
- views of 768 px (144 queries) or 1024 px (256), tiles of 768 px (144 each), 2-6 tiles; a page's placeholders are
  its tiles', then its global view's, then one separator (no newline positions). The project's render modes map
  to views in config/geometry.py: tiny has no OCR-2 view and is refused;
- layouts: "project" is transformers' (`model_type` deepseek_ocr2: `deepseek-community/DeepSeek-OCR-2` and any
  `save_pretrained` of the class); "official" the official repository's (`deepseek-ai/DeepSeek-OCR-2`, and
  `model.export`'s), whose config.json is mapped here and whose weights transformers' conversion mapping reads;
- module names (`model.vision_tower`, `model.multi_modal_projector`, `model.view_separator`,
  `model.language_model`), hence what is frozen and what LoRA targets.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

import torch

from config import UserError
from config.geometry import PAGE_GEOMETRY
from config.modes import DECODER_CONTEXT, tile_count
from data.jsonl import write_json_atomic
from model.backbones.base import Backbone, Layout, seeded
from model.image_processing import ProcessedImage

NAME = "deepseek-ocr-2"
TINY_PRESET = "tiny-random-ocr2"
HUB_ID = "deepseek-community/DeepSeek-OCR-2"  # transformers' layout
MODEL_TYPE = "deepseek_ocr2"
# Views, tiles and the placeholders' layout, declared where data/ counts them without torch (config/geometry.py);
# the encoder's learned queries per view are its (side/64)^2 vision tokens.
GEOMETRY = PAGE_GEOMETRY[NAME]
TILE = GEOMETRY.tile_size

# The decoder is DeepSeek-OCR's (DeepSeek-3B-MoE); the encoder: SAM ViT-B, then a 24-layer Qwen2 of width 896.
_DECODER = dict(vocab_size=129280, hidden_size=1280, intermediate_size=6848, moe_intermediate_size=896,
                num_hidden_layers=12, num_attention_heads=10, num_key_value_heads=10, n_routed_experts=64,
                num_experts_per_tok=6, n_shared_experts=2, max_position_embeddings=DECODER_CONTEXT,
                mlp_layer_types=["dense"] + ["sparse"] * 11, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                n_group=1, topk_group=1, topk_method="greedy", routed_scaling_factor=1.0)
# SAM's config draws random weights 1e-10 wide by default: a seeded model (a preset, a real-size benchmark model)
# would let no pixel reach the decoder and compute in subnormal floats (its tower 36% slower on a CPU in bf16).
# Random builds draw them as the rest of the model does; a checkpoint's weights replace them.
_SAM_INIT = {"initializer_range": 0.02}
_ENCODER = dict(sam_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                global_attn_indexes=[2, 5, 8, 11], downsample_channels=[512, 896], **_SAM_INIT),
                encoder_config=dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                    num_key_value_heads=2, intermediate_size=4864, vocab_size=1,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}))
_DECODER_PARTS = ("model.language_model.", "lm_head.")
OWN_VISION_KEY = "summarizer_vision_config"  # as DeepSeek-OCR's export names it
# The preset: the same architecture at tiny widths (the encoder's width is SAM's last downsample channel).
_TINY_DECODER = {**_DECODER, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                 "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 8,
                 "num_experts_per_tok": 2, "n_shared_experts": 1, "max_position_embeddings": 4096,
                 "mlp_layer_types": ["dense", "sparse", "sparse"]}
_TINY_ENCODER = dict(sam_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     global_attn_indexes=[1], output_channels=16, downsample_channels=[32, 64],
                                     mlp_dim=64, **_SAM_INIT),
                     encoder_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128, vocab_size=1,
                                         max_position_embeddings=1024))


def architecture(tiny: bool = False):
    """The real model's config (what `deepseek-community/DeepSeek-OCR-2` holds), or the preset's."""
    from transformers import DeepseekOcr2Config

    return DeepseekOcr2Config(text_config=_TINY_DECODER if tiny else _DECODER,
                              vision_config=_TINY_ENCODER if tiny else _ENCODER, image_token_id=128815)


def config_from_official(official: dict):
    """transformers' config of an official-layout config.json: DeepSeek-OCR's decoder fields (under
    `language_config`), the real encoder unless the folder carries its own sizes (OWN_VISION_KEY, which
    `official_config` writes for a preset)."""
    from transformers import DeepseekOcr2Config

    from model.configuration import official_decoder_fields

    decoder = official_decoder_fields(official)  # DeepSeek-OCR's decoder, read and checked as DeepSeek-OCR reads it
    text = {key: decoder[key] for key in (*_DECODER, "rms_norm_eps") if key in decoder}
    dense = decoder.get("first_k_dense_replace", 1)
    text["mlp_layer_types"] = ["dense"] * dense + ["sparse"] * (decoder["num_hidden_layers"] - dense)
    if "rope_theta" in decoder:
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": decoder["rope_theta"]}
    # The official code builds the real encoder whatever the file's vision schema says (its SAM fields are
    # DeepSeek-OCR's, downsample channels [512, 1024] included, where the neck it builds ends at 896 channels).
    encoder = official.get("vision_config", {}).get(OWN_VISION_KEY, _ENCODER)
    return DeepseekOcr2Config(text_config={**_DECODER, **text}, vision_config=encoder,
                              image_token_id=official.get("image_token_id", 128815))


@lru_cache(maxsize=None)  # one class: built on first use, so that importing the registry stays light
def _transformers_class():
    from transformers import DeepseekOcr2ForConditionalGeneration

    class DeepSeekOCR2ForSummarization(DeepseekOcr2ForConditionalGeneration):
        """transformers' class, with what fine-tuning needs of it and nothing else. (Beam search over tiled pages
        needs nothing: transformers encodes the pages before it repeats the rows, tests/model/test_deepseek_ocr2.py.)"""

        vision_frozen = False  # set by `freeze_vision`: a frozen encoder stays in eval mode

        def __init__(self, config):
            super().__init__(config)
            # The tower may run in bf16 (the encoder precision, model/checkpoint/device.py) beside a float32
            # projector: each takes its input in its own dtype.
            for module in (self.model.vision_tower, self.model.multi_modal_projector):
                module.register_forward_pre_hook(_in_own_dtype)
            _passes_its_own_output(self.model.vision_tower)

        def train(self, mode: bool = True):
            super().train(mode)
            if self.vision_frozen:
                self.model.vision_tower.eval()
            return self

        def save_pretrained(self, save_directory, *args, **kwargs):
            # transformers' names, not the official ones it writes by default: the Trainer resumes a checkpoint
            # with load_state_dict, which would match none of the official names and load nothing. Both load.
            kwargs.setdefault("save_original_format", False)
            super().save_pretrained(save_directory, *args, **kwargs)
            config = Path(save_directory) / "config.json"
            saved = json.loads(config.read_text(encoding="utf-8"))
            saved["architectures"] = [DeepseekOcr2ForConditionalGeneration.__name__]  # a class others have
            write_json_atomic(config, saved)

    return DeepSeekOCR2ForSummarization


def _reverted(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under the official checkpoint's names: transformers' conversion mapping of the class, reversed."""
    from transformers.core_model_loading import revert_weight_conversion

    # The class's whole mapping, not the part that loading this model used: a folder saved under transformers'
    # own names (this project's) loads through none of it, and reverting that would rename nothing.
    loaded = model.__dict__.pop("_weight_conversions", None)
    try:
        return revert_weight_conversion(model, dict(state))
    finally:
        if loaded is not None:
            model._weight_conversions = loaded


def _passes_its_own_output(tower: torch.nn.Module) -> None:
    """The tower reads pixels [N, 3, H, W] as before and passes its own output [N, tokens, width] through: what
    training's vision-feature cache hands it in `pixel_values`, so that transformers' own `get_image_features` maps
    cached features into the decoder (the projector after the tower may train). The instance's forward is wrapped,
    not its class or names, so its weights keep transformers' names."""
    from transformers.modeling_outputs import BaseModelOutput

    reads_pixels = tower.forward

    def forward(pixel_values: torch.Tensor, *args, **kwargs):
        if pixel_values.ndim == 3:
            return BaseModelOutput(last_hidden_state=pixel_values)
        return reads_pixels(pixel_values, *args, **kwargs)

    tower.forward = forward


def _in_own_dtype(module: torch.nn.Module, args: tuple) -> tuple:
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


class Ocr2PageProcessor:
    """A page -> DeepSeek-OCR-2's global view and 768 px tiles (transformers' PIL image processor, with the view of
    a render mode), and the placeholders it takes."""

    image_size = TILE
    min_tiles = GEOMETRY.min_tiles

    def __init__(self, mode: str, max_tiles: int = GEOMETRY.max_tiles):
        self.mode, self.max_tiles = mode, max_tiles
        self.global_size, self.crop_mode = GEOMETRY.view(mode)

    @classmethod
    def from_mode(cls, mode: str, max_tiles: int = GEOMETRY.max_tiles) -> "Ocr2PageProcessor":
        return cls(mode, max_tiles)

    def to_dict(self) -> dict:
        return {"backbone": NAME, "mode": self.mode, "max_tiles": self.max_tiles}

    @classmethod
    def from_dict(cls, data: dict) -> "Ocr2PageProcessor":
        return cls(data["mode"], data.get("max_tiles", GEOMETRY.max_tiles))

    def _images(self):
        from transformers import DeepseekOcr2ImageProcessorPil

        side = self.global_size
        # Without tiles transformers reads the global view at tile_size and counts it at size: both are the view.
        return DeepseekOcr2ImageProcessorPil(size={"height": side, "width": side},
                                             tile_size=TILE if self.crop_mode else side,
                                             crop_to_patches=self.crop_mode, min_patches=GEOMETRY.min_tiles,
                                             max_patches=self.max_tiles)

    def crop_grid(self, width: int, height: int) -> tuple[int, int]:
        """(columns, rows) of 768 px tiles, as transformers' processor picks them; (1, 1): none."""
        if not self.crop_mode or max(width, height) <= TILE:
            return (1, 1)
        from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import get_optimal_tiled_canvas

        return tuple(get_optimal_tiled_canvas((height, width), (TILE, TILE), GEOMETRY.min_tiles, self.max_tiles))

    def vision_tokens(self, width: int, height: int) -> int:
        """The encoder's output tokens for a page of this size (the separator not counted)."""
        return GEOMETRY.grid_vision_tokens(self.mode, self.crop_grid(width, height))

    def num_placeholders(self, crop_grid: tuple[int, int] = (1, 1)) -> int:
        """The page's vision tokens (its tiles', then its global view's) and the view separator after them."""
        return GEOMETRY.grid_positions(self.mode, crop_grid)

    def __call__(self, image) -> ProcessedImage:
        image = image.convert("RGB")
        out = self._images()(images=[image], return_tensors="pt")
        grid = self.crop_grid(*image.size)
        tiles = out.get("pixel_values_local")
        if tiles is None:
            tiles = torch.zeros(0, 3, TILE, TILE)
        if tiles.shape[0] != tile_count(grid):
            raise ValueError(f"transformers cut {tiles.shape[0]} tiles where the grid {grid} has {tile_count(grid)}")
        return ProcessedImage(out["pixel_values"], tiles, grid, self.num_placeholders(grid))

    @staticmethod
    def page_views(batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each page's (global view [3, S, S], tiles [n, 3, 768, 768]) in a batch of model inputs, in batch order."""
        counts = batch["num_local_patches"].tolist()
        tiles = batch.get("pixel_values_local", batch["pixel_values"].new_zeros(0, 3, TILE, TILE))
        starts = [sum(counts[:page]) for page in range(len(counts))]
        return [(view, tiles[start:start + n]) for view, start, n in zip(batch["pixel_values"], starts, counts)]

    @staticmethod
    def batch(pages: list[ProcessedImage]) -> dict[str, torch.Tensor]:
        """The model inputs of a batch's pages (in prompt order)."""
        batch = {"pixel_values": torch.cat([page.global_view for page in pages]),
                 "num_local_patches": torch.tensor([page.tiles.shape[0] for page in pages], dtype=torch.long)}
        if any(page.tiles.shape[0] for page in pages):
            batch["pixel_values_local"] = torch.cat([page.tiles for page in pages])
        return batch


class DeepSeekOCR2(Backbone):
    name = NAME
    title = "DeepSeek-OCR-2"
    presets = (TINY_PRESET,)
    hub_ids = {HUB_ID: "project"}
    model_types = (MODEL_TYPE,)
    encoder_title = "SAM + Qwen2 encoder"
    caches_vision_features = True
    parameter_parts = {"sam": ("model.vision_tower.sam_encoder.",), "qwen2_encoder": ("model.vision_tower.",),
                       "projector": ("model.multi_modal_projector.", "model.view_separator"),
                       "embed_tokens": ("model.language_model.embed_tokens.",),
                       "decoder_layers": ("model.language_model.layers.", "model.language_model.norm."),
                       "lm_head": ("lm_head.",)}

    def recognize(self, config: dict) -> Optional[Layout]:
        if config.get("model_type") == MODEL_TYPE:
            return "project"
        widths = (config.get("vision_config") or {}).get("width") or {}
        if "language_config" in config and isinstance(widths, dict) and any("qwen2" in key for key in widths):
            return "official"
        return None

    def config(self, layout: Layout, path: Optional[Path], name: str):
        from transformers import DeepseekOcr2Config

        if layout == "official":
            return config_from_official(json.loads((path / "config.json").read_text(encoding="utf-8")))
        if path is None:
            return architecture(tiny=name in self.presets)
        return DeepseekOcr2Config.from_pretrained(path)

    def load(self, layout: Layout, path: Optional[Path], name: str, dtype: torch.dtype, attn_implementation: str,
             experts_implementation: Optional[str], vision_only: bool = False):
        config = self.config(layout, path, name)
        config._experts_implementation = experts_implementation
        if vision_only and path is not None:
            return self._load_vision(config, path, dtype)
        if attn_implementation == "flash_attention_2":  # SAM's relative positions: the class refuses it
            attn_implementation = {"text_config": attn_implementation, "": "sdpa"}
        cls = _transformers_class()
        if path is None:
            if name not in self.presets:
                raise UserError(f"the weights of {name} are not available offline; pass a local folder")
            model = self.build(config).to(dtype)
            model.set_attn_implementation(attn_implementation)
        else:
            model = cls.from_pretrained(path, config=config, dtype=dtype, attn_implementation=attn_implementation,
                                        experts_implementation=experts_implementation)
        if vision_only:
            model.model.language_model = model.lm_head = None
        return model.eval()

    def _load_vision(self, config, path: Path, dtype: torch.dtype):
        """The vision parts of a folder of either layout, the decoder's weights never read (at real size they are
        ten times the encoder's, and transformers' loader would convert them all on the way)."""
        from model.official_layout import read_safetensors_folder

        config.text_config.num_hidden_layers, config.text_config.mlp_layer_types = 0, []
        model = self.build_empty(config, dtype)
        vision = {key: value for key, value in model.state_dict().items() if not key.startswith(_DECODER_PARTS)}
        official = {key: name for key, name in self._official_names(model).items() if key in vision}
        wanted = {**{key: key for key in vision}, **{name: key for key, name in official.items()}}
        state = {wanted[name]: tensor for name, tensor in
                 read_safetensors_folder(path, keep=lambda name: name in wanted).items()}
        missing = sorted(set(vision) - set(state))
        if missing:
            raise UserError(f"{path} lacks {len(missing)} weights of DeepSeek-OCR-2's encoder, e.g. {missing[0]}")
        model.load_state_dict({key: value.to(vision[key].dtype) for key, value in state.items()}, strict=False)
        model.model.language_model = model.lm_head = None
        return model.eval()

    @staticmethod
    def _official_names(model) -> dict[str, str]:
        """Each of the model's weights that the official checkpoint holds under another name alone (its vision
        parts: renamed, not packed) -> that name, from transformers' own mapping."""
        own = model.state_dict()
        by_tensor = {id(value): key for key, value in own.items()}
        return {by_tensor[id(value)]: name for name, value in _reverted(model, own).items()
                if id(value) in by_tensor}

    def build(self, config, dtype: torch.dtype = torch.float32):
        with seeded(dtype):
            return _transformers_class()(config)

    def build_empty(self, config, dtype: torch.dtype):
        from transformers import initialization

        with seeded(dtype), initialization.no_init_weights():
            return _transformers_class()(config)

    def page_processor(self, mode: str) -> Ocr2PageProcessor:
        return Ocr2PageProcessor(mode)

    def page_processor_from_dict(self, data: dict) -> Ocr2PageProcessor:
        return Ocr2PageProcessor.from_dict(data)

    def encoder(self, model) -> torch.nn.Module:
        return model.model.vision_tower

    def freeze_vision(self, model, train_projector: bool = False) -> None:
        model.model.vision_tower.requires_grad_(False)
        model.model.multi_modal_projector.requires_grad_(train_projector)
        model.model.view_separator.requires_grad_(train_projector)
        model.vision_frozen = True
        model.model.vision_tower.eval()

    def lora_pattern(self, targets: Iterable[str]) -> str:
        # The Qwen2 encoder has q/k/v/o and gate/up/down projections too: anchored to the decoder's layers.
        return rf"(?:model\.)?language_model\.layers\.\d+\.(?:.*\.)?(?:{'|'.join(targets)})"

    def decoder_modules(self, model) -> tuple[torch.nn.Module, ...]:
        return model.model.language_model, model.lm_head

    def image_features(self, model, batch: dict) -> torch.Tensor:
        # transformers' own seam: per page, its tiles' rows, its global view's, then the separator.
        features = model.model.get_image_features(batch["pixel_values"], batch.get("pixel_values_local"),
                                                  batch["num_local_patches"])
        return torch.cat(features.pooler_output)

    def page_views(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return Ocr2PageProcessor.page_views(batch)

    def encode_views(self, model, global_views: torch.Tensor, tiles: Optional[torch.Tensor]
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        tower = model.model.vision_tower
        return tower(global_views).last_hidden_state, None if tiles is None else tower(tiles).last_hidden_state

    def with_encoded(self, batch: dict, global_feats: torch.Tensor, tiles: Optional[torch.Tensor]) -> dict:
        inputs = {key: value for key, value in batch.items() if key not in ("pixel_values", "pixel_values_local")}
        # The tower passes its own output through (`_passes_its_own_output`).
        return {**inputs, "pixel_values": global_feats, **({"pixel_values_local": tiles} if tiles is not None else {})}

    def official_state_dict(self, model) -> dict[str, torch.Tensor]:
        # transformers' own conversion mapping, reversed: the names of deepseek-ai/DeepSeek-OCR-2's checkpoint.
        return _reverted(model, model.state_dict())

    def official_config(self, config, torch_dtype: str) -> dict:
        """The official repository's config.json: DeepSeek-OCR's decoder fields (the same decoder, so written by
        DeepSeek-OCR's own `to_official_config`) under DeepSeek-OCR-2's architecture and vision schema."""
        from model.configuration import DeepSeekOCRConfig

        text, vision = config.get_text_config(), config.vision_config
        sam, encoder = vision.sam_config, vision.encoder_config
        layers = list(text.mlp_layer_types)
        decoder = DeepSeekOCRConfig(
            **{key: getattr(text, key) for key in _DECODER if key != "mlp_layer_types"},
            first_k_dense_replace=layers.index("sparse") if "sparse" in layers else len(layers),
            rms_norm_eps=text.rms_norm_eps,
            **({"rope_parameters": text.rope_parameters} if text.rope_parameters else {}))
        official = decoder.to_official_config(torch_dtype)
        official.pop("auto_map", None)
        official["architectures"] = ["DeepseekOCR2ForCausalLM"]
        official["projector_config"]["input_dim"] = encoder.hidden_size
        official["vision_config"] = {
            "image_size": 1024, "model_type": "vision", "layers": encoder.num_hidden_layers,
            "width": {"sam_vit_b": {"width": sam.hidden_size, "layers": sam.num_hidden_layers,
                                    "heads": sam.num_attention_heads,
                                    "global_attn_indexes": list(sam.global_attn_indexes),
                                    "downsample_channels": list(sam.downsample_channels)},
                      "qwen2-0-5b": {"dim": encoder.hidden_size}}}
        if vision.to_dict() != architecture().vision_config.to_dict():
            # Sizes the official schema cannot hold (the official code builds the real encoder whatever it says):
            # a tiny preset's, so that the folder loads back as it was.
            official["vision_config"][OWN_VISION_KEY] = vision.to_dict()
        return official

    def maps_projector(self, official_config: dict) -> bool:
        # llama.cpp's converter builds the Qwen2 encoder from fixed sizes (14 heads, 2 KV heads, 4,864) and maps
        # SAM's neck by block index (at least four blocks): the real model's, not a tiny preset's.
        vision = official_config.get("vision_config", {})
        sam = vision.get("width", {}).get("sam_vit_b", {})
        return sam.get("layers", 0) >= 4 and vision.get("width", {}).get("qwen2-0-5b", {}).get("dim") == 896


BACKBONE = DeepSeekOCR2()
