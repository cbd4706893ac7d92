"""`DeepSeekOCRForConditionalGeneration`: DeepEncoder + projector + MoE decoder + lm_head.

Official counterpart: `DeepseekOCRForCausalLM` / `DeepseekOCRModel` (`modeling_deepseekocr.py`). Differences, all
deliberate: vision runs whenever pixels (or cached `vision_features`) are given, on the model's device, and with
gradients where parameters require them (the official code wraps it in `no_grad`); several pages per sample and
batches with left padding are supported; the training loss includes the MoE balance loss (see `forward`).

The routed experts (official `DeepseekV2MoE.experts`, a per-expert loop in training and the sorted-token `moe_infer`
in eval) are transformers' `DeepseekOcr2TextExperts`, so they run through transformers' experts implementations:
`grouped_mm` by default, `eager` (the per-expert loop) or `batched_mm`, chosen with `experts_implementation=` at
load time or `model.set_experts_implementation(...)` afterwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
    DeepseekOcr2TextExperts,
    DeepseekOcr2TextPreTrainedModel,
    DeepseekOcr2TextTopkRouter,
)
from transformers.utils import ModelOutput

from config.modes import tile_count
from model.configuration import DeepSeekOCRConfig
from model.decoder import DeepSeekOCRDecoder
from model.deep_encoder import DeepEncoder
from model.image_processing import layout_placeholders, tokens_per_side
from model.vision_layout import layout_vision_embeddings

_VISION_KWARGS = ("pixel_values", "pixel_values_tiles", "images_spatial_crop", "vision_features")


class VisionFeatures(NamedTuple):
    """DeepEncoder outputs of a batch, before the projector (what the trainer may cache per page)."""

    global_feats: torch.Tensor  # [P, q*q, 2048]: one global view per page, pages in batch order
    tiles: Optional[torch.Tensor] = None  # [T, qt*qt, 2048]: all tiles in page order, or None


def _tiles_per_page(images_spatial_crop: torch.Tensor) -> list[int]:
    return [tile_count(grid) for grid in images_spatial_crop.tolist()]


def layout_pages(global_embeds, tile_embeds, images_spatial_crop, image_newline, view_separator) -> torch.Tensor:
    """Per page [tiles grid + newlines][global grid + newlines][separator], all pages concatenated."""
    pieces, start = [], 0
    for page, n_tiles in enumerate(_tiles_per_page(images_spatial_crop)):
        tiles = tile_embeds[start:start + n_tiles] if n_tiles else None
        if n_tiles and (tile_embeds is None or tiles.shape[0] != n_tiles):
            raise ValueError("images_spatial_crop asks for more tiles than pixel_values_tiles holds")
        grid = tuple(images_spatial_crop[page].tolist())
        pieces.append(layout_vision_embeddings(global_embeds[page], tiles, grid, image_newline, view_separator))
        start += n_tiles
    if tile_embeds is not None and start != tile_embeds.shape[0]:
        raise ValueError(f"pixel_values_tiles holds {tile_embeds.shape[0]} tiles but images_spatial_crop uses {start}")
    return torch.cat(pieces)


def _page_lengths(vision: dict) -> list[int]:
    """Placeholder count of each page, from the tokens per side of its views (cached features) or from the
    sides of its pixels."""
    features = vision.get("vision_features")
    tiles = None
    if features is not None:
        side = math.isqrt(features.global_feats.shape[1])
        if features.tiles is not None:
            tiles = math.isqrt(features.tiles.shape[1])
        n_pages = features.global_feats.shape[0]
    else:
        side, n_pages = tokens_per_side(vision["pixel_values"].shape[-1]), vision["pixel_values"].shape[0]
        if vision.get("pixel_values_tiles") is not None:
            tiles = tokens_per_side(vision["pixel_values_tiles"].shape[-1])
    crops = vision.get("images_spatial_crop")
    crops = crops.tolist() if crops is not None else [[1, 1]] * n_pages
    # Without tiles a grid that asks for some is refused by `layout_pages`; counting them as empty is harmless.
    return [layout_placeholders(side, tiles or 0, tuple(crop)) for crop in crops]


def expand_vision_inputs(vision: dict, input_ids: torch.Tensor, image_token_id: int, expand_size: int) -> dict:
    """Repeat each sample's pages (and tiles) `expand_size` times, matching the row repeat of input_ids."""
    lengths = _page_lengths(vision)
    crops = vision.get("images_spatial_crop")
    n_tiles = _tiles_per_page(crops) if crops is not None else [0] * len(lengths)
    page_ids, tile_ids, page, tile = [], [], 0, 0
    for count in (input_ids == image_token_id).sum(dim=1).tolist():
        first_page, first_tile = page, tile
        while count > 0:
            count -= lengths[page]
            tile += n_tiles[page]
            page += 1
        if count != 0:
            raise ValueError("image placeholders do not split into whole pages per sample")
        page_ids += list(range(first_page, page)) * expand_size
        tile_ids += list(range(first_tile, tile)) * expand_size
    page_idx, tile_idx = torch.tensor(page_ids, dtype=torch.long), torch.tensor(tile_ids, dtype=torch.long)
    out = {}
    for key, value in vision.items():
        if key == "vision_features":
            tiles = value.tiles[tile_idx.to(value.tiles.device)] if value.tiles is not None else None
            out[key] = VisionFeatures(value.global_feats[page_idx.to(value.global_feats.device)], tiles)
        elif key == "pixel_values_tiles":
            out[key] = value[tile_idx.to(value.device)]
        else:
            out[key] = value[page_idx.to(value.device)]
    return out


@dataclass
class DeepSeekOCROutput(ModelOutput):
    """`loss` = `ce_loss` + `aux_loss` in training mode (aux is None in eval mode, where loss = ce_loss)."""

    loss: Optional[torch.FloatTensor] = None
    ce_loss: Optional[torch.FloatTensor] = None
    aux_loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    past_key_values: Optional[Cache] = None
    hidden_states: Optional[tuple] = None


class DeepSeekOCRForConditionalGeneration(PreTrainedModel, GenerationMixin):
    config_class = DeepSeekOCRConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["DeepseekOcr2TextDecoderLayer", "DeepEncoder"]
    _skip_keys_device_placement = ["past_key_values"]

    def __init__(self, config: DeepSeekOCRConfig):
        super().__init__(config)
        vision = config.vision
        # SAM's relative-position bias rules out flash attention in the encoder; it uses SDPA unless eager is asked.
        vision.attn_implementation = "eager" if config._attn_implementation == "eager" else "sdpa"
        self.vision_encoder = DeepEncoder(vision)
        self.projector = nn.Linear(config.projector_input_dim, config.hidden_size)
        self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))
        self.view_separator = nn.Parameter(torch.zeros(config.hidden_size))
        self.language_model = DeepSeekOCRDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vision_frozen = False  # set by model.params.freeze_vision_encoder
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, DeepseekOcr2TextTopkRouter):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, DeepseekOcr2TextExperts):
            nn.init.normal_(module.gate_up_proj, std=std)
            nn.init.normal_(module.down_proj, std=std)
        elif module is self:
            nn.init.normal_(self.image_newline, std=std)
            nn.init.normal_(self.view_separator, std=std)

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # transformers grants the grouped/batched experts kernels (and makes grouped_mm the default) only when the
        # model class's own module carries its experts decorator. Ours borrows the decorated experts class from
        # transformers' DeepSeek-OCR-2 module, so that module's answer is the true one for this model.
        return DeepseekOcr2TextPreTrainedModel._can_set_experts_implementation()

    def get_input_embeddings(self):
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value):
        self.language_model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vision_frozen:  # a frozen encoder stays in eval mode (no dropout/statistics drift)
            self.vision_encoder.eval()
        return self

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers=1):
        # Decoder layers only: the encoder is usually frozen, and recomputing it would only cost time.
        for index, layer in enumerate(self.language_model.layers):
            layer.gradient_checkpointing = enable and index % every_n_layers == 0
            layer._gradient_checkpointing_func = gradient_checkpointing_func

    # ----------------------------------------------------------------------------------------- vision

    def encode_images(self, pixel_values: torch.Tensor, pixel_values_tiles: Optional[torch.Tensor] = None) -> VisionFeatures:
        """DeepEncoder outputs before the projector: (global [P, q*q, 2048], tiles [T, 100, 2048] or None)."""
        # The encoder's own dtype: a frozen bf16 encoder may feed a float32 trainable projector.
        dtype = next(self.vision_encoder.parameters()).dtype
        global_feats = self.vision_encoder(pixel_values.to(self.device, dtype))
        tiles = None
        if pixel_values_tiles is not None and pixel_values_tiles.shape[0] > 0:
            tiles = self.vision_encoder(pixel_values_tiles.to(self.device, dtype))
        return VisionFeatures(global_feats, tiles)

    def image_embeddings(self, features: VisionFeatures, images_spatial_crop: torch.Tensor) -> torch.Tensor:
        """Project the features and lay out every page: [sum of placeholders over pages, hidden]."""
        dtype = self.projector.weight.dtype
        tiles = self.projector(features.tiles.to(dtype)) if features.tiles is not None else None
        return layout_pages(self.projector(features.global_feats.to(dtype)), tiles, images_spatial_crop,
                            self.image_newline, self.view_separator)

    def _merge_image_embeddings(self, input_ids, inputs_embeds, features, images_spatial_crop):
        image_embeds = self.image_embeddings(features, images_spatial_crop)
        mask = input_ids == self.config.image_token_id
        if int(mask.sum()) != image_embeds.shape[0]:
            raise ValueError(
                f"the prompts hold {int(mask.sum())} image placeholder tokens ({self.config.image_token_id}) but the "
                f"images give {image_embeds.shape[0]} embeddings; build prompts and pixels with the same processor"
            )
        # Out-of-place so gradients reach both the text embeddings and (when trained) the projector.
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), image_embeds.to(inputs_embeds.dtype))

    # ----------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        pixel_values_tiles: Optional[torch.Tensor] = None,
        images_spatial_crop: Optional[torch.LongTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        vision_features: Optional[VisionFeatures] = None,
        output_hidden_states: Optional[bool] = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> DeepSeekOCROutput:
        """Training loss: mean shifted CE over labels != -100 (logits in float32), plus in training mode the sum of
        the per-MoE-layer balance losses. The official code injects the balance loss' gradient with an autograd
        trick instead of adding it; adding it gives the same gradients and lets the trainer log both parts."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.language_model.embed_tokens(input_ids)
        if pixel_values is not None and vision_features is None:
            vision_features = self.encode_images(pixel_values, pixel_values_tiles)
        if vision_features is not None:
            if input_ids is None:
                raise ValueError("image inputs need input_ids to find the image placeholder positions")
            if images_spatial_crop is None:
                images_spatial_crop = torch.ones(vision_features.global_feats.shape[0], 2, dtype=torch.long)
            inputs_embeds = self._merge_image_embeddings(input_ids, inputs_embeds, vision_features, images_spatial_crop)

        use_cache = self.config.use_cache if use_cache is None and not self.training else bool(use_cache)
        out = self.language_model(
            inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
            use_cache=use_cache, output_hidden_states=bool(output_hidden_states), **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden).float()

        loss = ce_loss = None
        if labels is not None:
            shift_labels = labels[:, 1:].to(logits.device)
            ce_loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)
            loss = ce_loss if out.aux_loss is None else ce_loss + out.aux_loss
        return DeepSeekOCROutput(
            loss=loss, ce_loss=ce_loss, aux_loss=out.aux_loss, logits=logits,
            past_key_values=out.past_key_values, hidden_states=out.hidden_states,
        )

    # ----------------------------------------------------------------------------------------- generation

    def prepare_inputs_for_generation(self, input_ids, is_first_iteration=False, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            # The image embeddings are already in the KV cache after the prompt step.
            for key in _VISION_KWARGS:
                inputs.pop(key, None)
        return inputs

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        # Pages are not one per sample, so the default per-row repeat would misalign them with the beams.
        vision = {key: model_kwargs.pop(key) for key in _VISION_KWARGS if model_kwargs.get(key) is not None}
        if vision and expand_size > 1:
            vision = expand_vision_inputs(vision, input_ids, self.config.image_token_id, expand_size)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **vision}
