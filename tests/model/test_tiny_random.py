"""The tiny-random preset end to end on CPU: forward, backward, freezing, generation (greedy, batched, beams)."""
import pytest
import torch

from model.checkpoint.convert import load_model
from model.modeling import VisionFeatures
from model.params import freeze_vision_encoder, parameter_counts, trainable_parameter_counts

IMAGE = 128815
BASE = 256  # 4x4 tokens per global view: 4 * 5 + 1 = 21 placeholders


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-random")


def page_pixels(n, seed, side=BASE):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def prompt(pages_tokens, text):
    return [0] + [IMAGE] * pages_tokens + text


def test_preset_is_deterministic_and_small(model):
    again = load_model("tiny-random")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    counts = parameter_counts(model)
    assert counts["total"] < 30_000_000 and counts["decoder_active"] < counts["decoder_total"]


def test_forward_backward_with_frozen_encoder():
    model = load_model("tiny-random")
    freeze_vision_encoder(model)
    model.train()
    assert not model.vision_encoder.training and model.language_model.training
    ids = torch.tensor([prompt(21, [5, 6, 7, 8, 1])])
    labels = ids.clone()
    labels[:, :23] = -100
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=page_pixels(1, 0), labels=labels)
    assert out.aux_loss is not None and torch.allclose(out.loss, out.ce_loss + out.aux_loss)
    out.loss.backward()
    assert model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.language_model.layers[1].mlp.experts.gate_up_proj.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert model.projector.weight.grad is None
    counts = trainable_parameter_counts(model)
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters()
                                      if not n.startswith(("vision_encoder.", "projector.", "image_newline", "view_sep")))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = load_model("tiny-random")
        freeze_vision_encoder(model, train_projector=True)
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.language_model.layers)
        model.train()
        ids = torch.tensor([prompt(21, [5, 6, 7])])
        model(input_ids=ids, pixel_values=page_pixels(1, 1), labels=ids).loss.backward()
        grads.append(model.projector.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_cached_features_equal_pixels_and_several_pages_per_sample(model):
    pixels = page_pixels(2, 2)
    ids = torch.tensor([prompt(42, [5, 6])])  # two pages in one sample
    with torch.no_grad():
        from_pixels = model(input_ids=ids, pixel_values=pixels).logits
        features = model.encode_images(pixels)
        assert isinstance(features, VisionFeatures) and features.global_feats.shape == (2, 16, 128)
        from_features = model(input_ids=ids, vision_features=features).logits
    torch.testing.assert_close(from_pixels, from_features)


def test_tiles_layout_runs(model):
    # A page with a 2x1 tile grid: 21 + (10*2+1)*10 = 231 placeholders.
    ids = torch.tensor([prompt(231, [5])])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=page_pixels(1, 3), pixel_values_tiles=page_pixels(2, 4, 640),
                    images_spatial_crop=torch.tensor([[2, 1]]))
    assert out.logits.shape == (1, 233, model.config.vocab_size)


def test_batched_left_padded_generation_equals_one_at_a_time(model):
    prompts = [prompt(21, [5, 6, 7, 8, 9]), prompt(21, [10])]
    pixels = page_pixels(2, 5)
    settings = dict(max_new_tokens=6, do_sample=False, no_repeat_ngram_size=3, pad_token_id=2)
    singles = [model.generate(input_ids=torch.tensor([p]), pixel_values=pixels[i:i + 1], **settings)[0, len(p):]
               for i, p in enumerate(prompts)]
    width = max(map(len, prompts))
    ids = torch.tensor([[2] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **settings)[:, width:]
    for single, row in zip(singles, batched):
        assert row.tolist() == single.tolist()


def test_beam_search_with_two_pages_in_one_sample(model):
    ids = torch.tensor([prompt(42, [5, 6]), [2] * 21 + prompt(21, [7, 8])])
    mask = (torch.arange(ids.shape[1]) >= torch.tensor([[0], [21]])).long()
    out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=page_pixels(3, 6),
                         num_beams=3, max_new_tokens=4, do_sample=False, pad_token_id=2)
    assert out.shape == (2, ids.shape[1] + 4)


def test_placeholder_mismatch_raises(model):
    with pytest.raises(ValueError, match="image placeholder"):
        model(input_ids=torch.tensor([prompt(20, [5])]), pixel_values=page_pixels(1, 7))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_implementations_agree(model, impl):
    other = load_model("tiny-random", attn_implementation=impl)
    ids = torch.tensor([prompt(21, [5, 6])])
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=page_pixels(1, 8)).logits
        got = other(input_ids=ids, pixel_values=page_pixels(1, 8)).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_bfloat16_forward(model):
    low = load_model("tiny-random", dtype=torch.bfloat16)
    ids = torch.tensor([prompt(21, [5, 6])])
    with torch.no_grad():
        out = low(input_ids=ids, pixel_values=page_pixels(1, 9), labels=ids)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.loss)


def test_bf16_frozen_encoder_feeds_a_float32_projector():
    """The trainer's memory-saving layout: frozen encoder in bf16, trainable projector in float32, no autocast."""
    import torch

    from model.checkpoint.convert import load_model

    model = load_model("tiny-random")
    model.vision_encoder.to(torch.bfloat16)
    pixels = torch.zeros(1, 3, 512, 512)
    features = model.encode_images(pixels)
    assert features.global_feats.dtype == torch.bfloat16
    embeds = model.image_embeddings(features, torch.tensor([[1, 1]]))
    assert embeds.dtype == torch.float32 and embeds.shape[0] == 73


@pytest.mark.parametrize("preset, mode", [("tiny-random", "tiny"), ("tiny-random-ocr2", "large")])
def test_a_presets_image_features_depend_on_its_pages(preset, mode):
    """Random weights that let no pixel through (SAM's own initializer draws them 1e-10 wide) would make every test
    of what a page does to the summary pass vacuously: each view of a page, global and tiles, changes its rows."""
    from PIL import Image

    from model import backbones

    model = load_model(preset)
    backbone = backbones.of_model(model)
    pages = backbone.page_processor(mode)
    blank, marked = Image.new("RGB", (1536, 768), "white"), Image.new("RGB", (1536, 768), "white")
    marked.paste((0, 0, 0), (900, 100, 1400, 600))  # in the page's right half: its second tile where it has tiles
    with torch.no_grad():
        a, b = (backbone.image_features(model, pages.batch([pages(page)])) for page in (blank, marked))
    assert a.shape == b.shape and (a - b).abs().amax(dim=-1).gt(1e-3).float().mean() > 0.5
