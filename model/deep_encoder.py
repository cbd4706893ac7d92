"""DeepSeek-OCR's DeepEncoder (SAM ViT-B + 16x compressor + CLIP-L), written natively for PyTorch.

Mirrors the official `deepencoder.py` of the HF remote code, module for module, so that official checkpoint keys
map 1:1 (`sam_model.*`, `vision_model.*`), except for two points handled by `convert_official_vision_state_dict`
(and undone by `to_official_vision_state_dict` for export): CLIP's fused `qkv_proj` is split into q/k/v (we reuse
transformers' `CLIPEncoderLayer`), and the keys listed in `DROPPED_OFFICIAL_VISION_KEYS` are discarded.

Why SAM is our own code and not transformers' `DeepseekOcr2SamVisionEncoder`: in float32 that module computes the
same function, but it resizes the global-attention `rel_pos` tables in the layer dtype (the official code resizes
them in float32, which differs in bfloat16/float16), it renames every key (`layers`, `layer_norm1`, `neck.conv1`,
`proj.conv1`, ...) and it is a `PreTrainedModel` with its own config/output-capture machinery. A 100-line module
with the official names is simpler and exact in every dtype.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# Size of the relative-position bias attended at once (see SamAttention.forward).
_BIAS_CHUNK_BYTES = 128 * 2**20

# Official keys (relative to `model.`) with no counterpart here. CLIP's `patch_embedding` conv is never used by
# DeepSeek-OCR (CLIP takes SAM's `net_3` map as its patch embeddings), and `position_ids` is a constant buffer
# (0..256) that the real checkpoint does not even contain. The converter drops them.
DROPPED_OFFICIAL_VISION_KEYS = (
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.position_ids",
)
CLIP_PATCH_KEY = DROPPED_OFFICIAL_VISION_KEYS[0]
CLIP_PATCH_SIZE = 14  # CLIP-L/14: the kernel of the unused patch-embedding conv
_QKV = ("q_proj", "k_proj", "v_proj")  # the three blocks of CLIP's fused qkv_proj, in this order


@dataclass
class VisionConfig:
    """Sizes of the DeepEncoder; the defaults are the real DeepSeek-OCR ones."""

    sam_width: int = 768
    sam_depth: int = 12
    sam_heads: int = 12
    sam_mlp_dim: int = 3072
    sam_patch_size: int = 16
    sam_window_size: int = 14
    sam_global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    sam_pos_grid: int = 64  # pos_embed is pos_grid x pos_grid (1024 / 16)
    sam_neck_dim: int = 256
    downsample_channels: tuple[int, ...] = (512, 1024)
    clip_width: int = 1024
    clip_layers: int = 24
    clip_heads: int = 16
    clip_mlp_dim: int = 4096
    clip_pos_grid: int = 16  # 257 position entries = class + 16x16
    attn_implementation: str = "sdpa"

    def __post_init__(self):
        self.sam_global_blocks = tuple(self.sam_global_blocks)
        self.downsample_channels = tuple(self.downsample_channels)
        if self.clip_width != self.downsample_channels[-1]:
            raise ValueError("clip_width must equal downsample_channels[-1]: SAM's last map is CLIP's patch input")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")

    @property
    def out_dim(self) -> int:
        return self.clip_width + self.downsample_channels[-1]

    @classmethod
    def tiny(cls) -> "VisionConfig":
        """A few-MB preset for the `tiny-random` model and fast tests."""
        return cls(sam_width=32, sam_depth=2, sam_heads=2, sam_mlp_dim=64, sam_global_blocks=(1,), sam_neck_dim=16,
                   downsample_channels=(32, 64), clip_width=64, clip_layers=2, clip_heads=2, clip_mlp_dim=128)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sam_global_blocks"] = list(self.sam_global_blocks)
        data["downsample_channels"] = list(self.downsample_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "VisionConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VisionConfig keys: {sorted(unknown)}")
        return cls(**data)


def _resize_grid(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic+antialias resize of a [1, C, g, g] table, computed in float32 as the official code does."""
    resized = F.interpolate(table.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return resized.to(table.dtype)


# ----------------------------------------------------------------------------------------------- SAM ViT-B


class LayerNorm2d(nn.Module):
    """Official `LayerNorm2d`: LayerNorm over channels of an NCHW map (biased variance)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SamPatchEmbed(nn.Module):
    """Official `PatchEmbed`: 16x16 conv, output channels-last [N, H, W, C]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.sam_width, kernel_size=cfg.sam_patch_size, stride=cfg.sam_patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _rel_pos_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """[size, size, head_dim] table R[q, k] = rel_pos[q - k + size - 1], resizing rel_pos linearly (in float32)."""
    length = 2 * size - 1
    if rel_pos.shape[0] != length:
        resized = F.interpolate(rel_pos.float().t()[None], size=length, mode="linear")
        rel_pos = resized[0].t().to(rel_pos.dtype)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + size - 1]


# Key-grid rows shorter than this build their bias by a matrix product (see `_bias_by_matmul`).
_MIN_ADD_ROW = 32


def _bias_by_add(rel_h: torch.Tensor, rel_w: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """bias[.., qh, qw, kh, kw] = rel_h[.., qh, qw, kh] + rel_w[.., qh, qw, kw], by a broadcast sum."""
    return torch.add(rel_h[..., :, None], rel_w[..., None, :], out=out)


def _bias_by_matmul(rel_h: torch.Tensor, rel_w: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The bias of `_bias_by_add` with the key grid flattened, as one matrix product
    [rel_h | rel_w] @ [one-hot(kh) ; one-hot(kw)].

    Each output sums exactly two nonzero terms in float32 and rounds once, so it equals the broadcast sum bit for
    bit in every dtype. A bfloat16 broadcast sum runs a scalar loop over key rows shorter than a vector, as SAM's
    14-wide windows are, while the product runs as one vectorised matrix multiply: that is why windowed blocks use
    it; over 64-wide rows (global blocks) the two are about even in bfloat16 and the sum is the faster in float32
    (see benchmarks.bench_encoder, bfloat16 and float32 at 1024 px).
    """
    height, width = rel_h.shape[-1], rel_w.shape[-1]
    keys = torch.arange(height * width, device=rel_h.device)
    key_grid = torch.cat([F.one_hot(keys // width, height), F.one_hot(keys % width, width)], dim=-1)
    rel = torch.cat([rel_h, rel_w], dim=-1)
    if out is None:
        return rel @ key_grid.T.to(rel.dtype)
    return torch.matmul(rel, key_grid.T.to(rel.dtype), out=out.view(*rel.shape[:-1], height * width))


class SamAttention(nn.Module):
    """Official SAM `Attention`: fused qkv, decomposed relative positions added as an additive bias."""

    def __init__(self, cfg: VisionConfig, table_size: int):
        super().__init__()
        self.heads = cfg.sam_heads
        head_dim = cfg.sam_width // cfg.sam_heads
        self.scale = head_dim**-0.5
        self.attn_implementation = cfg.attn_implementation
        self.qkv = nn.Linear(cfg.sam_width, cfg.sam_width * 3)
        self.proj = nn.Linear(cfg.sam_width, cfg.sam_width)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * table_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * table_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, HW, head_dim]

        # The relative-position bias uses the UNSCALED query; the 1/sqrt(d) scale only applies to q.k.
        grid_q = q.reshape(batch, self.heads, height, width, -1)
        # einsum returns permuted strides, which a broadcast add would pass on to the bias (and a reshape would
        # then copy it whole): contiguous terms make the add write the bias once, in the layout attention reads.
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, _rel_pos_table(self.rel_pos_h, height)).contiguous()
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, _rel_pos_table(self.rel_pos_w, width)).contiguous()
        # Each query's softmax is independent of the others', so queries are attended a few grid rows at a time,
        # their slice of the bias written into one buffer: writing the whole (HW)^2 bias of a global block (805 MB
        # at 1024 px) into fresh memory cost more than computing it. With gradients each chunk needs its own bias,
        # which attention keeps for the backward pass.
        row_bytes = self.heads * width * height * width * q.element_size() * batch
        rows = min(height, max(1, _BIAS_CHUNK_BYTES // row_bytes))
        reuse = not (rel_h.requires_grad or rel_w.requires_grad)
        # Flat and no longer than the grid, so that each chunk's bias (the last one may be shorter) is a contiguous
        # view: a [.., rows, ..] buffer made shorter chunks, and windows (fewer rows than `rows`), strided masks
        # spread over a larger allocation (1024 px, one thread: windowed attention x1.04, global x1.05-1.18).
        buffer = q.new_empty(rows * row_bytes // q.element_size()) if reuse else None
        bias_of = _bias_by_add if width >= _MIN_ADD_ROW else _bias_by_matmul
        chunks = []
        for start in range(0, height, rows):
            end = min(start + rows, height)
            shape = (batch, self.heads, end - start, width, height, width)
            out = buffer[:math.prod(shape)].view(shape) if reuse else None
            bias = bias_of(rel_h[:, :, start:end], rel_w[:, :, start:end], out)
            bias = bias.view(batch, self.heads, (end - start) * width, height * width)
            chunk_q = q[:, :, start * width:end * width]
            if self.attn_implementation == "sdpa":
                chunks.append(F.scaled_dot_product_attention(chunk_q, k, v, attn_mask=bias))
            else:
                weights = (chunk_q * self.scale) @ k.transpose(-2, -1) + bias
                chunks.append(weights.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v)
        out = torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0]
        out = out.permute(0, 2, 1, 3).reshape(batch, height, width, -1)
        return self.proj(out)


class SamMLP(nn.Module):
    """Official `MLPBlock` with exact (erf) GELU."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.lin1 = nn.Linear(cfg.sam_width, cfg.sam_mlp_dim)
        self.lin2 = nn.Linear(cfg.sam_mlp_dim, cfg.sam_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class SamBlock(nn.Module):
    """Official `Block`: pre-LN; windowed attention (zero-pad bottom/right to a multiple of the window) or global."""

    def __init__(self, cfg: VisionConfig, window_size: int):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(cfg.sam_width, eps=1e-6)
        self.attn = SamAttention(cfg, window_size or cfg.sam_pos_grid)
        self.norm2 = nn.LayerNorm(cfg.sam_width, eps=1e-6)
        self.mlp = SamMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if self.window_size:
            h = self._windowed_attention(h)
        else:
            h = self.attn(h)
        # The residual sums land in the branch outputs, fresh tensors whose producers (a linear layer, a copy)
        # keep nothing of them for backward: no new 12 MB tensor per sum at 1024 px.
        x = h.add_(x)
        return self.mlp(self.norm2(x)).add_(x)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        w = self.window_size
        pad_h, pad_w = -height % w, -width % w
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // w, (width + pad_w) // w
        windows = x.reshape(batch, rows, w, cols, w, channels).permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, channels)
        windows = self.attn(windows)
        x = windows.reshape(batch, rows, cols, w, w, channels).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, rows * w, cols * w, channels)[:, :height, :width].contiguous()


class SamEncoder(nn.Module):
    """Official `ImageEncoderViT` (SAM ViT-B) with DeepSeek-OCR's `net_2`/`net_3` 16x token compressor.

    [N, 3, S, S] -> [N, downsample_channels[-1], S/64, S/64].
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_embed = SamPatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.sam_pos_grid, cfg.sam_pos_grid, cfg.sam_width))
        self.blocks = nn.ModuleList(
            SamBlock(cfg, 0 if i in cfg.sam_global_blocks else cfg.sam_window_size) for i in range(cfg.sam_depth)
        )
        neck = cfg.sam_neck_dim
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.sam_width, neck, kernel_size=1, bias=False),
            LayerNorm2d(neck),
            nn.Conv2d(neck, neck, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck),
        )
        mid, out = cfg.downsample_channels
        self.net_2 = nn.Conv2d(neck, mid, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = nn.Conv2d(mid, out, kernel_size=3, stride=2, padding=1, bias=False)
        self.gradient_checkpointing = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)
        pos = self.pos_embed
        if pos.shape[1] != x.shape[1]:
            pos = _resize_grid(pos.permute(0, 3, 1, 2), x.shape[1]).permute(0, 2, 3, 1)
        x = x + pos
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        return self.net_3(self.net_2(x))


# ----------------------------------------------------------------------------------------------- CLIP-L


class ClipEmbeddings(nn.Module):
    """Official `CLIPVisionEmbeddings` minus the unused `patch_embedding`: SAM's map supplies the patch tokens."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.pos_grid = cfg.clip_pos_grid
        self.class_embedding = nn.Parameter(torch.zeros(cfg.clip_width))
        self.position_embedding = nn.Embedding(cfg.clip_pos_grid**2 + 1, cfg.clip_width)

    def forward(self, patch_map: torch.Tensor) -> torch.Tensor:
        patches = patch_map.flatten(2).transpose(1, 2)  # [N, g*g, C], token-major
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self._positions(int(math.isqrt(patches.shape[1])))

    def _positions(self, grid: int) -> torch.Tensor:
        table = self.position_embedding.weight
        if grid == self.pos_grid:
            return table[None]
        src = table[1:].reshape(1, self.pos_grid, self.pos_grid, -1).permute(0, 3, 1, 2)
        resized = _resize_grid(src, grid).permute(0, 2, 3, 1).reshape(grid * grid, -1)
        return torch.cat([table[:1], resized], dim=0)[None]


class ClipVisionModel(nn.Module):
    """Official `VitModel` (CLIP-L): embeddings, `pre_layrnorm`, 24 pre-LN layers, no post-layernorm.

    The layers are transformers' `CLIPEncoderLayer` (quick_gelu, eps 1e-5), which compute exactly the official
    `NoTPTransformerBlock` once the fused `qkv_proj` is split.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        clip_config = CLIPVisionConfig(
            hidden_size=cfg.clip_width, intermediate_size=cfg.clip_mlp_dim, num_hidden_layers=cfg.clip_layers,
            num_attention_heads=cfg.clip_heads, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
        )
        clip_config._attn_implementation = cfg.attn_implementation
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.clip_width, eps=1e-5)
        self.transformer = CLIPEncoder(clip_config)

    def forward(self, patch_map: torch.Tensor) -> torch.Tensor:
        """[N, C, g, g] SAM map -> [N, 1 + g*g, C] (index 0 is the class token)."""
        hidden = self.pre_layrnorm(self.embeddings(patch_map))
        return self.transformer(hidden).last_hidden_state

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for layer in self.transformer.layers:
            layer.gradient_checkpointing = enabled
            layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)


# ----------------------------------------------------------------------------------------------- DeepEncoder


class DeepEncoder(nn.Module):
    """SAM -> compressor -> CLIP; per view, concat(CLIP tokens without class token, SAM tokens), CLIP first.

    forward: [N, 3, S, S] -> [N, (S // 64) ** 2, config.out_dim].
    """

    def __init__(self, config: VisionConfig | None = None):
        super().__init__()
        self.config = config or VisionConfig()
        self.sam_model = SamEncoder(self.config)
        self.vision_model = ClipVisionModel(self.config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        sam_map = self.sam_model(pixel_values)
        clip_tokens = self.vision_model(sam_map)[:, 1:]
        return torch.cat([clip_tokens, sam_map.flatten(2).transpose(1, 2)], dim=-1)

    def set_attn_implementation(self, name: str) -> None:
        """Switch every attention between PyTorch SDPA and the eager (explicit softmax) path."""
        if name not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        self.config.attn_implementation = name
        for block in self.sam_model.blocks:
            block.attn.attn_implementation = name
        self.vision_model.transformer.config._attn_implementation = name

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward (only matters when the encoder is trained)."""
        self.sam_model.gradient_checkpointing = enabled
        self.vision_model.set_gradient_checkpointing(enabled)


def convert_official_vision_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `sam_model.*`/`vision_model.*` keys (without the leading `model.`) -> `DeepEncoder` keys.

    Keys are kept as they are except CLIP's fused `self_attn.qkv_proj.{weight,bias}` (three consecutive blocks
    q, k, v), which becomes `q_proj`/`k_proj`/`v_proj`, and `DROPPED_OFFICIAL_VISION_KEYS`, which are removed.
    Keys of other parts of the model are ignored.
    """
    out = {}
    for key, value in sd.items():
        if not key.startswith(("sam_model.", "vision_model.")) or key in DROPPED_OFFICIAL_VISION_KEYS:
            continue
        if ".self_attn.qkv_proj." in key:
            prefix, kind = key.split(".qkv_proj.")
            for name, part in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{prefix}.{name}.{kind}"] = part.clone()
        else:
            out[key] = value
    return out


def to_official_vision_state_dict(sd: dict[str, torch.Tensor], cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """`DeepEncoder` keys -> official `sam_model.*`/`vision_model.*` keys (without the leading `model.`): the inverse
    of `convert_official_vision_state_dict`.

    q/k/v are fused back into `qkv_proj`, and CLIP's `patch_embedding` conv, which the official loaders expect
    but no official forward uses, is written as zeros of its official shape. `position_ids` is not written: the
    real checkpoint does not hold it either (the official code builds it).
    """
    out = {}
    for key, value in sd.items():
        if ".self_attn.q_proj." in key:
            prefix, kind = key.split(".q_proj.")
            out[f"{prefix}.qkv_proj.{kind}"] = torch.cat([sd[f"{prefix}.{name}.{kind}"] for name in _QKV], dim=0)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            out[key] = value
    like = sd["vision_model.embeddings.class_embedding"]
    out[CLIP_PATCH_KEY] = torch.zeros(cfg.clip_width, 3, CLIP_PATCH_SIZE, CLIP_PATCH_SIZE,
                                      dtype=like.dtype, device=like.device)
    return out
