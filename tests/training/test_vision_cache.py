"""Vision cache, for each backbone: one encoder pass per page, the loss of the uncached model, a projector that
still trains, disk keys that follow the weights."""
import pytest
import torch

from config import RenderConfig
from model import backbones
from model.checkpoint.convert import load_model
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer
from tests.training.test_collator import bundled_records
from training.collator import DeepSeekOCRCollator
from training.vision_cache import VisionFeatureCache

# Each backbone's preset and the pages it reads: its smallest mode, and DeepSeek-OCR-2's tiled pages (seven views a
# page: in the whole suite).
READS = {"deepseek-ocr": ("tiny-random", "tiny"), "deepseek-ocr-2": ("tiny-random-ocr2", "small"),
         "deepseek-ocr-2-tiled": ("tiny-random-ocr2", "gundam")}


@pytest.fixture(scope="module", params=["deepseek-ocr", "deepseek-ocr-2",
                                        pytest.param("deepseek-ocr-2-tiled", marks=pytest.mark.slow)])
def run(request):
    """(preset, a collated batch of two documents with their page keys)."""
    preset, mode = READS[request.param]
    pages = backbones.named(request.param.removesuffix("-tiled")).page_processor(mode)
    processor = DeepSeekOCRProcessor(load_tokenizer(None), pages)
    batch = DeepSeekOCRCollator(processor, RenderConfig(mode=mode), 32, with_page_keys=True)(bundled_records(2))
    for key in REPORTING_KEYS:
        batch.pop(key, None)  # source_truncated exists only for text input
    return preset, batch


def frozen_model(preset, train_projector=False):
    model = load_model(preset)
    backbones.of_model(model).freeze_vision(model, train_projector=train_projector)
    return model


def count_encoder_calls(model) -> list[int]:
    """Calls of the encoder on pixels [N, 3, H, W] (DeepSeek-OCR-2's passes its own cached output through)."""
    calls = [0]

    def count(module, args, output):
        calls[0] += args[0].ndim == 4

    backbones.of_model(model).encoder(model).register_forward_hook(count)
    return calls


def loss_of(model, inputs) -> torch.Tensor:
    return model(**{key: value for key, value in inputs.items() if key != "page_keys"}).loss


def cached(cache, model, batch) -> dict:
    """The model inputs the cache makes of the batch; the pixels are gone (DeepSeek-OCR-2's inputs hold the
    encoder's output under their names)."""
    inputs = cache.model_inputs(model, batch)
    assert "page_keys" not in inputs and "pixel_values_tiles" not in inputs
    for name in ("pixel_values", "pixel_values_local"):
        if name in inputs:
            assert inputs[name].shape[-1] != batch[name].shape[-1]  # features, not a view's pixel columns
    return inputs


def test_memory_cache_encodes_each_page_once_and_gives_the_uncached_loss(run):
    preset, batch = run
    model = frozen_model(preset)
    cache = VisionFeatureCache(model)
    calls = count_encoder_calls(model)
    with torch.no_grad():
        reference = loss_of(model, batch)
        calls[0] = 0
        first = loss_of(model, cached(cache, model, batch))
        passes = calls[0]
        assert passes >= 1 and (cache.misses, cache.hits) == (2, 0)
        for _ in range(3):  # later epochs
            again = loss_of(model, cached(cache, model, batch))
    assert calls[0] == passes and (cache.misses, cache.hits) == (2, 6)
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(again, reference, rtol=0, atol=1e-6)


def test_cached_features_give_the_same_loss_and_train_the_projector(run):
    preset, batch = run
    model = frozen_model(preset, train_projector=True).train()
    reference = loss_of(model, batch)
    loss = loss_of(model, VisionFeatureCache(model).model_inputs(model, batch))
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    loss.backward()
    backbone = backbones.of_model(model)
    projector = [p for name, p in model.named_parameters()
                 if name.startswith(backbone.parameter_parts["projector"]) and p.ndim == 2]
    assert projector and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector)


def test_disk_cache_is_keyed_by_content_and_encoder_weights(run, tmp_path):
    preset, batch = run
    model = frozen_model(preset)
    with torch.no_grad():
        reference = loss_of(model, batch)
        cached(VisionFeatureCache(model, tmp_path), model, batch)
        calls = count_encoder_calls(model)
        reopened = VisionFeatureCache(model, tmp_path)  # a new run: features come from disk
        loss = loss_of(model, cached(reopened, model, batch))
    assert calls[0] == 0 and reopened.hits == 2
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    with torch.no_grad():
        next(backbones.of_model(model).encoder(model).parameters()).add_(1e-3)
    changed = VisionFeatureCache(model, tmp_path)
    assert changed.fingerprint != reopened.fingerprint
    cached(changed, model, batch)
    assert calls[0] >= 1 and changed.misses == 2


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-ocr2"])
def test_cache_refuses_a_trainable_encoder(preset):
    with pytest.raises(ValueError, match="frozen encoder"):
        VisionFeatureCache(load_model(preset))


@pytest.mark.slow  # tiled DeepSeek-OCR-2 pages, as the other tiled runs
def test_deepseek_ocr2_cache_keeps_each_pages_tiles_in_a_batch_of_tiled_and_untiled_pages():
    """Pages with tiles and without, in one batch and in two documents: the cached features reach each page's
    placeholders as the encoder's would (the loss is the uncached one)."""
    from PIL import Image

    from training.collator import page_key

    pages = backbones.named("deepseek-ocr-2").page_processor("large")
    processor = DeepSeekOCRProcessor(load_tokenizer(None), pages)
    wide, square = Image.new("RGB", (1536, 768), "white"), Image.new("RGB", (700, 700), "white")
    wide.paste((0, 0, 0), (100, 100, 600, 300))
    batch = dict(processor([[wide, square], [square.rotate(90), wide.rotate(180)]], ["A summary.", "Another."]))
    assert batch["num_local_patches"].tolist() == [2, 0, 0, 2]
    for key in REPORTING_KEYS:
        batch.pop(key, None)
    batch["page_keys"] = [page_key(*view) for view in pages.page_views(batch)]
    model = frozen_model("tiny-random-ocr2")
    cache = VisionFeatureCache(model)
    with torch.no_grad():
        reference = loss_of(model, batch)
        first, again = (loss_of(model, cached(cache, model, batch)) for _ in range(2))
    assert (cache.misses, cache.hits) == (3, 5)  # the two squares are one page
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(again, reference, rtol=0, atol=1e-6)
