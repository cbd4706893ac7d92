"""DeepEncoder parity with the official DeepSeek-OCR code (reference fixture, cases A and B), plus fast unit tests.

Tolerances are the fixture README's (section 8): atol/rtol 1e-4 on vision features, relative 1e-5 on the float64
debug statistics. Each comparison prints its max abs error (`pytest -s` shows them).
"""
import time

import pytest
import torch
import torch.nn.functional as F

from model.deep_encoder import (
    DROPPED_OFFICIAL_VISION_KEYS,
    DeepEncoder,
    VisionConfig,
    convert_official_vision_state_dict,
)
from model.image_processing import normalize_pixels
from model.vision_layout import layout_vision_embeddings

ATOL = RTOL = 1e-4


def _close(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL, rtol: float = RTOL):
    actual = actual.detach().to(expected.dtype)
    print(f"PARITY {name}: max abs {(actual - expected).abs().max().item():.3g}")
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def _stats_close(name: str, tensor: torch.Tensor, expected_sum_sumsq: torch.Tensor):
    """Float64 sum / sum of squares, relative 1e-5. A sum of ~1e6 values of both signs cancels, so its error is
    measured against the sum of absolute values (rounding noise adds up over elements, not over the net sum)."""
    t = tensor.detach().double()
    stats = torch.stack([t.sum(), t.square().sum()])
    scale = torch.stack([t.abs().sum(), stats[1]])
    rel = ((stats - expected_sum_sumsq).abs() / scale).max().item()
    print(f"PARITY {name} f64 sum/sumsq: rel {rel:.3g}")
    assert rel < 1e-5, f"{name}: float64 statistics differ by {rel:.3g} (relative)"


def _run(encoder: DeepEncoder, pixels: torch.Tensor, modules: dict) -> tuple[torch.Tensor, dict]:
    """Forward once, capturing the outputs of the named submodules."""
    captured, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, getattr(out, "last_hidden_state", out))))
    try:
        with torch.no_grad():
            out = encoder(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return out, captured


# --------------------------------------------------------------------------------------------- full size


@pytest.fixture(scope="module")
def encoder(official_state_dict):
    torch.set_num_threads(2)
    official = {k.removeprefix("model."): v for k, v in official_state_dict.items() if k.startswith("model.")}
    model = DeepEncoder().eval()
    model.load_state_dict(convert_official_vision_state_dict(official), strict=True)
    return model


@pytest.fixture(scope="module")
def projector(official_state_dict):
    weight, bias = official_state_dict["model.projector.layers.weight"], official_state_dict["model.projector.layers.bias"]
    return lambda features: F.linear(features, weight, bias)


@pytest.fixture(scope="module")
def separators(official_state_dict):
    return official_state_dict["model.image_newline"], official_state_dict["model.view_seperator"]


@pytest.fixture(scope="module")
def case_a(encoder, reference_tensors):
    sam, clip = encoder.sam_model, encoder.vision_model
    modules = {"patch_embed": sam.patch_embed, "neck": sam.neck, "net_2": sam.net_2, "sam_out": sam.net_3,
               "clip_embeddings": clip.embeddings, "pre_layrnorm": clip.pre_layrnorm, "clip_out": clip.transformer}
    modules |= {f"sam_block_{i}": block for i, block in enumerate(sam.blocks)}
    modules |= {f"clip_layer_{i}": layer for i, layer in enumerate(clip.transformer.layers)}
    wall, cpu = time.perf_counter(), time.process_time()
    out, captured = _run(encoder, reference_tensors["a_pixel_values"], modules)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"TIMING full-size DeepEncoder, tiny 512, sdpa, float32, 2 threads: wall {wall:.2f} s, cpu {cpu:.2f} s")
    return out, captured


def test_official_keys_load_strictly(official_state_dict, encoder):
    vision_keys = {k.removeprefix("model.") for k in official_state_dict
                   if k.startswith(("model.sam_model.", "model.vision_model."))}
    assert set(DROPPED_OFFICIAL_VISION_KEYS) <= vision_keys
    assert not any("patch_embedding" in k or "position_ids" in k for k in encoder.state_dict())


def test_case_a_sam_stages(case_a, reference_tensors):
    _, got = case_a
    ref = reference_tensors
    _close("A patch_embed (strided)", got["patch_embed"].flatten()[::192], ref["a_dbg_sam_patch_embed_out_strided"])
    for i in range(12):
        block = got[f"sam_block_{i}"]
        _close(f"A sam block {i} (strided)", block.flatten()[::192], ref["a_dbg_sam_block_out_strided"][i])
        _stats_close(f"A sam block {i}", block, ref["a_dbg_sam_block_out_f64_sum_sumsq"][i])
    _close("A neck", got["neck"], ref["a_sam_neck_out"])
    _close("A net_2", got["net_2"], ref["a_sam_net2_out"])
    _close("A sam_out", got["sam_out"], ref["a_sam_out"])


def test_case_a_clip_stages(case_a, reference_tensors):
    _, got = case_a
    ref = reference_tensors
    _close("A clip embeddings", got["clip_embeddings"], ref["a_clip_embeddings_out"])
    _close("A clip pre_layrnorm", got["pre_layrnorm"], ref["a_clip_pre_layrnorm_out"])
    for i in range(24):
        layer = got[f"clip_layer_{i}"]
        expected = ref["a_dbg_clip_layer_out_strided"][i]
        _close(f"A clip layer {i} (strided)", layer.flatten()[::16][: expected.numel()], expected)
        _stats_close(f"A clip layer {i}", layer, ref["a_dbg_clip_layer_out_f64_sum_sumsq"][i])
    _close("A clip_out", got["clip_out"], ref["a_clip_out"])


def test_case_a_projector_and_layout(case_a, projector, separators, reference_tensors):
    out, _ = case_a
    assert out.shape == (1, 64, 2048)
    projected = projector(out)
    _close("A proj_out", projected, reference_tensors["a_proj_out"])
    sequence = layout_vision_embeddings(projected[0], None, (1, 1), *separators)
    assert sequence.shape == (73, 128)
    _close("A image_embeds_seq", sequence, reference_tensors["a_image_embeds_seq"])


def test_case_a_eager_matches_sdpa_and_official(encoder, case_a, reference_tensors):
    try:
        encoder.set_attn_implementation("eager")
        with torch.no_grad():
            eager = encoder(reference_tensors["a_pixel_values"])
    finally:
        encoder.set_attn_implementation("sdpa")
    _close("A eager vs sdpa (encoder output)", eager, case_a[0])
    _close("A eager sam part", eager[0, :, 1024:], reference_tensors["a_sam_out"].flatten(2)[0].T)
    _close("A eager clip part", eager[0, :, :1024], reference_tensors["a_clip_out"][0, 1:])


@pytest.fixture(scope="module")
def case_b(encoder, reference_tensors):
    modules = {"sam": encoder.sam_model, "clip": encoder.vision_model}
    tiles = _run(encoder, normalize_pixels(reference_tensors["b_tile_pixel_values_u8"]), modules)
    global_view = _run(encoder, normalize_pixels(reference_tensors["b_global_pixel_values_u8"]), modules)
    return tiles, global_view


@pytest.mark.slow  # the full-size DeepEncoder on case B's large page and tiles
def test_case_b_sam_and_clip(case_b, reference_tensors):
    (_, tiles), (_, global_view) = case_b
    ref = reference_tensors
    _close("B sam_out tile 0", tiles["sam"][:1], ref["b_sam_out_tile0"])
    _close("B sam_out global", global_view["sam"], ref["b_sam_out_global"])
    _close("B clip_out tile 0", tiles["clip"][:1], ref["b_clip_out_tile0"])
    _close("B clip_out global", global_view["clip"], ref["b_clip_out_global"])
    for k in range(6):
        _stats_close(f"B sam_out tile {k}", tiles["sam"][k], ref["b_sam_out_tiles_f64_sum_sumsq"][k])
        _stats_close(f"B clip_out tile {k}", tiles["clip"][k], ref["b_clip_out_tiles_f64_sum_sumsq"][k])


@pytest.mark.slow  # the full-size DeepEncoder on case B's large page and tiles
def test_case_b_projector_and_layout(case_b, projector, separators, reference_tensors):
    (tile_out, _), (global_out, _) = case_b
    tiles, global_view = projector(tile_out), projector(global_out)
    _close("B proj_out tiles", tiles, reference_tensors["b_proj_out_tiles"])
    _close("B proj_out global", global_view, reference_tensors["b_proj_out_global"])
    grid = tuple(reference_tensors["b_images_spatial_crop"][0].tolist())
    sequence = layout_vision_embeddings(global_view[0], tiles, grid, *separators)
    assert sequence.shape == (893, 128)
    _close("B image_embeds_seq", sequence, reference_tensors["b_image_embeds_seq"])


# --------------------------------------------------------------------------------------------- tiny preset, fast


@pytest.fixture
def tiny_encoder():
    torch.manual_seed(0)
    model = DeepEncoder(VisionConfig.tiny()).eval()
    with torch.no_grad():  # rel-pos tables start at zero; make them matter
        for name, param in model.named_parameters():
            if "rel_pos" in name or "pos_embed" in name or "position_embedding" in name:
                param.normal_(std=0.5)
    return model


@pytest.mark.parametrize("side", [512, 640, 1024])
def test_tiny_output_shape(tiny_encoder, side):
    out = tiny_encoder(torch.randn(2, 3, side, side))
    assert out.shape == (2, (side // 64) ** 2, tiny_encoder.config.out_dim) == (2, (side // 64) ** 2, 128)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
def test_sdpa_matches_eager(tiny_encoder, dtype, atol):
    model = tiny_encoder.to(dtype)
    pixels = torch.randn(2, 3, 512, 512, dtype=dtype)
    with torch.no_grad():
        sdpa = model(pixels)
        model.set_attn_implementation("eager")
        eager = model(pixels)
    assert sdpa.dtype == dtype
    print(f"SDPA vs eager, tiny preset, {dtype}: max abs {(sdpa.float() - eager.float()).abs().max():.3g}")
    torch.testing.assert_close(sdpa.float(), eager.float(), atol=atol, rtol=atol)


def test_gradient_checkpointing_keeps_gradients(tiny_encoder):
    pixels = torch.randn(1, 3, 256, 256)
    model = tiny_encoder.train()
    model(pixels).square().mean().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(pixels).square().mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_vision_config_roundtrip_and_validation():
    for config in (VisionConfig(), VisionConfig.tiny(), VisionConfig(attn_implementation="eager")):
        assert VisionConfig.from_dict(config.to_dict()) == config
    assert VisionConfig().out_dim == 2048
    with pytest.raises(ValueError):
        VisionConfig(clip_width=512)
    with pytest.raises(ValueError):
        VisionConfig(attn_implementation="flash")


def test_converter_splits_fused_qkv_and_drops_unused_keys():
    tiny = DeepEncoder(VisionConfig.tiny())
    official = {}
    for key, value in tiny.state_dict().items():  # rebuild an official-format dict from our own keys
        if ".self_attn.q_proj." in key:
            parts = [tiny.state_dict()[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            official[key.replace("q_proj", "qkv_proj")] = torch.cat(parts)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            official[key] = value
    official["vision_model.embeddings.patch_embedding.weight"] = torch.zeros(64, 3, 14, 14)
    official["vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    official["projector.layers.weight"] = torch.zeros(1)  # other parts of the model are ignored
    converted = convert_official_vision_state_dict(official)
    assert converted.keys() == tiny.state_dict().keys()
    for key, value in tiny.state_dict().items():
        assert torch.equal(converted[key], value), key


def test_layout_orders_tiles_then_global_then_separator():
    dim, q, qt, cols, rows = 3, 2, 2, 3, 2
    global_feats = torch.arange(q * q).float()[:, None].expand(-1, dim) + 1000
    # Tile k, token (r, c) gets the value 100*k + 10*r + c.
    tokens = torch.tensor([[100 * k + 10 * r + c for r in range(qt) for c in range(qt)] for k in range(cols * rows)])
    tile_feats = tokens.float()[..., None].expand(-1, -1, dim)
    newline, separator = torch.full((dim,), -1.0), torch.full((dim,), -2.0)
    seq = layout_vision_embeddings(global_feats, tile_feats, (cols, rows), newline, separator)[:, 0].tolist()
    expected = []
    for grid_row in range(rows * qt):
        tile_row, r = divmod(grid_row, qt)
        expected += [100 * (tile_row * cols + tc) + 10 * r + c for tc in range(cols) for c in range(qt)] + [-1]
    expected += [1000, 1001, -1, 1002, 1003, -1, -2]
    assert seq == expected
    assert len(seq) == (qt * cols + 1) * (qt * rows) + q * (q + 1) + 1


def test_layout_is_differentiable():
    global_feats = torch.randn(4, 5, requires_grad=True)
    newline = torch.randn(5, requires_grad=True)
    layout_vision_embeddings(global_feats, None, (1, 1), newline, torch.randn(5)).sum().backward()
    assert global_feats.grad is not None and newline.grad.abs().sum() > 0
