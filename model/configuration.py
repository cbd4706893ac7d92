"""`DeepSeekOCRConfig`: one flat config for the whole model (DeepEncoder + projector + MoE decoder).

The text fields keep the names of the official `config.json` (`DeepseekV2Config` with `use_mla=False`), so the
decoder layers borrowed from transformers' DeepSeek-OCR-2 read them directly from this object; the vision side is
stored as the dict of the vision package's `VisionConfig` (model/deep_encoder.py) so it round-trips through
`config.json` unchanged.
"""
from __future__ import annotations

import copy
from typing import Any

import transformers
from transformers import AutoConfig, PretrainedConfig

from config.modes import DECODER_CONTEXT

OFFICIAL_HUB_ID = "deepseek-ai/DeepSeek-OCR"
TINY_PRESET = "tiny-random"

# Official language fields copied verbatim by `from_official_config` (top level or under "language_config").
_OFFICIAL_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
    "first_k_dense_replace", "moe_layer_freq", "n_group", "topk_group", "topk_method", "norm_topk_prob",
    "scoring_func", "routed_scaling_factor", "aux_loss_alpha", "seq_aux", "max_position_embeddings",
    "rms_norm_eps", "rope_theta", "hidden_act", "attention_bias", "attention_dropout", "initializer_range",
    "bos_token_id", "eos_token_id", "tie_word_embeddings",
)
# Official fields with one value in every DeepSeek-OCR checkpoint (MHA, not MLA; no RoPE scaling; the MoE
# router's expert-parallel size), written by `to_official_config` so the official loaders find every field.
_OFFICIAL_TEXT_CONSTANTS = {
    "ep_size": 1, "use_mla": False, "q_lora_rank": None, "kv_lora_rank": None, "qk_nope_head_dim": 0,
    "qk_rope_head_dim": 0, "v_head_dim": 0, "rope_scaling": None, "pretraining_tp": 1, "use_cache": True,
    "lm_head": True, "rm_head": False,
}
_OFFICIAL_LANGUAGE_HEADER = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseekv2.DeepseekV2Config",
                 "AutoModel": "modeling_deepseek.DeepseekV2Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"},
}
OFFICIAL_MODEL_TYPE = "deepseek_vl_v2"  # the official config.json's model_type
_OFFICIAL_HEADER = {
    "architectures": ["DeepseekOCRForCausalLM"],
    "auto_map": {"AutoConfig": "modeling_deepseekocr.DeepseekOCRConfig",
                 "AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM"},
    "candidate_resolutions": [[1024, 1024]], "global_view_pos": "head", "tile_tag": "2D",
    "model_type": OFFICIAL_MODEL_TYPE,
}
# Vision sizes the official schema cannot express travel under this key of `vision_config` (a tiny preset only;
# the official code hard-codes the real encoder and ignores `vision_config` altogether).
_OWN_VISION_KEY = "summarizer_vision_config"


def _vision_config_cls():
    # Imported lazily: the vision module imports nothing from here, but keeps this module light to import.
    from model.deep_encoder import VisionConfig

    return VisionConfig


def official_decoder_fields(official: dict[str, Any]) -> dict[str, Any]:
    """The decoder fields of an official `config.json` (`language_config` over the top level), checked: MHA, no
    RoPE scaling, a projector as wide as the decoder. DeepSeek-OCR-2's official files hold the same decoder."""
    language = {**official, **official.get("language_config", {})}
    fields = {key: language[key] for key in _OFFICIAL_TEXT_FIELDS if key in language}
    if language.get("use_mla"):
        raise ValueError("the official config uses MLA attention; DeepSeek-OCR's decoder does not")
    if language.get("rope_scaling"):
        raise ValueError("rope_scaling is not supported (DeepSeek-OCR has none)")
    if official.get("projector_config", {}).get("n_embed", fields.get("hidden_size")) != fields.get("hidden_size"):
        raise ValueError("projector_config.n_embed must equal the decoder hidden_size")
    return fields


class DeepSeekOCRConfig(PretrainedConfig):
    """Config of `DeepSeekOCRForConditionalGeneration`; defaults are the real DeepSeek-OCR sizes."""

    model_type = "deepseek_ocr_summarizer"
    # transformers' MoE modules read `num_experts`.
    attribute_map = {"num_experts": "n_routed_experts"}

    vocab_size: int = 129280
    hidden_size: int = 1280
    intermediate_size: int = 6848
    moe_intermediate_size: int = 896
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    n_routed_experts: int = 64
    num_experts_per_tok: int = 6
    n_shared_experts: int = 2
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "greedy"
    norm_topk_prob: bool = False
    scoring_func: str = "softmax"
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 0.001
    seq_aux: bool = True
    max_position_embeddings: int = DECODER_CONTEXT
    rms_norm_eps: float = 1e-6
    rope_parameters: dict | None = None
    hidden_act: str = "silu"
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    initializer_range: float = 0.02
    use_cache: bool = True
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 2
    image_token_id: int = 128815
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    # Per-layer "dense"/"sparse", derived from first_k_dense_replace/moe_layer_freq as the official code does.
    mlp_layer_types: list | None = None
    vision_config: dict | None = None
    projector_input_dim: int = 2048

    def __post_init__(self, **kwargs):
        self.head_dim = self.hidden_size // self.num_attention_heads
        if self.mlp_layer_types is None:
            self.mlp_layer_types = [
                "sparse" if i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0 else "dense"
                for i in range(self.num_hidden_layers)
            ]
        if self.vision_config is None:
            self.vision_config = _vision_config_cls()().to_dict()
        if self.vision_config and self.projector_input_dim != self.vision.out_dim:
            raise ValueError(f"projector_input_dim {self.projector_input_dim} != vision out_dim {self.vision.out_dim}")
        kwargs.setdefault("rope_theta", 10000.0)
        super().__post_init__(**kwargs)
        if self.scoring_func != "softmax" or self.topk_method != "greedy" or self.norm_topk_prob:
            raise ValueError("only the DeepSeek-OCR router (softmax scores, greedy top-k, no renormalisation) is supported")

    @property
    def vision(self):
        """The vision side as the encoder's `VisionConfig` object."""
        return _vision_config_cls().from_dict(self.vision_config)

    @classmethod
    def from_official_config(cls, official: dict[str, Any], **overrides) -> "DeepSeekOCRConfig":
        """Read an official `config.json` (model_type deepseek_vl_v2) as a dict.

        The official code hard-codes its vision tower and ignores `vision_config`, so the real `VisionConfig`
        defaults are used; the projector width must equal the decoder width.
        """
        fields = official_decoder_fields(official)
        projector = official.get("projector_config", {})
        if "input_dim" in projector:
            fields["projector_input_dim"] = projector["input_dim"]
        if _OWN_VISION_KEY in official.get("vision_config", {}):
            fields["vision_config"] = official["vision_config"][_OWN_VISION_KEY]
        fields.update(overrides)
        return cls(**fields)

    def to_official_config(self, torch_dtype: str) -> dict[str, Any]:
        """The official `config.json` of this model: the inverse of `from_official_config`.

        Language fields at the top level and again under `language_config` (the official loaders read both),
        `projector_config`, and `vision_config` in the official schema.
        """
        from model.deep_encoder import CLIP_PATCH_SIZE

        language = {key: getattr(self, key) for key in _OFFICIAL_TEXT_FIELDS if key != "rope_theta"}
        language["rope_theta"] = self.rope_parameters["rope_theta"]
        language.update(_OFFICIAL_TEXT_CONSTANTS)
        vision = self.vision
        sam = {"downsample_channels": list(vision.downsample_channels),
               "global_attn_indexes": list(vision.sam_global_blocks), "heads": vision.sam_heads,
               "layers": vision.sam_depth, "width": vision.sam_width}
        clip = {"heads": vision.clip_heads, "image_size": vision.clip_pos_grid * CLIP_PATCH_SIZE,
                "layers": vision.clip_layers, "patch_size": CLIP_PATCH_SIZE, "width": vision.clip_width}
        # mlp_ratio and model_name are the official file's values; no official code derives a size from them.
        vision_config = {"image_size": vision.sam_pos_grid * vision.sam_patch_size, "mlp_ratio": 3.7362,
                         "model_name": "deeplip_b_l", "model_type": "vision",
                         "width": {"clip-l-14-224": clip, "sam_vit_b": sam}}
        if self.vision_config != _vision_config_cls()().to_dict():
            vision_config[_OWN_VISION_KEY] = self.vision_config
        return {
            **_OFFICIAL_HEADER,
            "language_config": {**language, **_OFFICIAL_LANGUAGE_HEADER, "torch_dtype": torch_dtype},
            "projector_config": {"input_dim": self.projector_input_dim, "model_type": "mlp_projector",
                                 "n_embed": self.hidden_size, "projector_type": "linear"},
            "vision_config": vision_config,
            "torch_dtype": torch_dtype,
            "transformers_version": transformers.__version__,
            **language,
        }

    @classmethod
    def preset(cls, name: str) -> "DeepSeekOCRConfig":
        """`"deepseek-ai/DeepSeek-OCR"` (real sizes) or `"tiny-random"` (same structure, tiny widths)."""
        if name == OFFICIAL_HUB_ID:
            return cls()
        if name == TINY_PRESET:
            tiny_vision = _vision_config_cls().tiny()
            # Vocabulary kept at full size so the real tokenizer's ids (incl. <image> 128815) stay valid.
            return cls(
                hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2,
                n_shared_experts=1, max_position_embeddings=4096,
                vision_config=tiny_vision.to_dict(), projector_input_dim=tiny_vision.out_dim,
            )
        raise ValueError(f"unknown preset {name!r}; choose {OFFICIAL_HUB_ID!r} or {TINY_PRESET!r}")

    def copy(self) -> "DeepSeekOCRConfig":
        return copy.deepcopy(self)


# Known to AutoConfig, so transformers' Auto* loaders (e.g. AutoTokenizer on a trained folder) read our config.json
# instead of warning about an unknown model type.
AutoConfig.register(DeepSeekOCRConfig.model_type, DeepSeekOCRConfig)
