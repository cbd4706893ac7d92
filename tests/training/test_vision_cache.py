"""Vision cache: one encoder pass per page, features equal to uncached ones, disk keys follow the weights."""
import pytest
import torch

from config import RenderConfig
from model.checkpoint.convert import load_model
from model.image_processing import DeepSeekOCRImageProcessor
from model.params import freeze_vision_encoder
from model.processing import REPORTING_KEYS, DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer
from tests.training.test_collator import bundled_records
from training.collator import DeepSeekOCRCollator
from training.vision_cache import VisionFeatureCache


@pytest.fixture(scope="module")
def batch():
    processor = DeepSeekOCRProcessor(load_tokenizer(None), DeepSeekOCRImageProcessor.from_mode("tiny"))
    batch = DeepSeekOCRCollator(processor, RenderConfig(mode="tiny"), 32, with_page_keys=True)(bundled_records(2))
    for key in REPORTING_KEYS:
        batch.pop(key, None)  # source_truncated exists only for text input
    return batch


def frozen_model(train_projector=False):
    model = load_model("tiny-random")
    freeze_vision_encoder(model, train_projector=train_projector)
    return model


def count_encoder_calls(model) -> list[int]:
    calls = [0]
    model.vision_encoder.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    return calls


def cached(cache, model, batch):
    """The features the cache puts into the batch's model inputs, in place of the pixels (checked gone)."""
    inputs = cache.model_inputs(model, batch)
    assert "page_keys" not in inputs and "pixel_values" not in inputs and "pixel_values_tiles" not in inputs
    return inputs["vision_features"]


def test_memory_cache_encodes_each_page_once_and_matches(batch):
    model = frozen_model()
    cache = VisionFeatureCache(model)
    calls = count_encoder_calls(model)
    first = cached(cache, model, batch)
    assert calls[0] == 1 and (cache.misses, cache.hits) == (2, 0)
    for _ in range(3):  # later epochs
        again = cached(cache, model, batch)
    assert calls[0] == 1 and (cache.misses, cache.hits) == (2, 6)
    direct = model.encode_images(batch["pixel_values"])
    assert torch.equal(first.global_feats, direct.global_feats) and torch.equal(again.global_feats, direct.global_feats)


def test_cached_features_give_the_same_loss_and_train_the_projector(batch):
    model = frozen_model(train_projector=True).train()
    inputs = {k: v for k, v in batch.items() if k != "page_keys"}
    reference = model(**inputs).loss
    loss = model(**VisionFeatureCache(model).model_inputs(model, batch)).loss
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    loss.backward()
    assert model.projector.weight.grad is not None and model.projector.weight.grad.abs().sum() > 0


def test_disk_cache_is_keyed_by_content_and_encoder_weights(batch, tmp_path):
    model = frozen_model()
    cached(VisionFeatureCache(model, tmp_path), model, batch)
    calls = count_encoder_calls(model)
    reopened = VisionFeatureCache(model, tmp_path)  # a new run: features come from disk
    features = cached(reopened, model, batch)
    assert calls[0] == 0 and reopened.hits == 2
    assert torch.equal(features.global_feats, model.encode_images(batch["pixel_values"]).global_feats)
    calls[0] = 0
    with torch.no_grad():
        next(model.vision_encoder.parameters()).add_(1e-3)
    changed = VisionFeatureCache(model, tmp_path)
    assert changed.fingerprint != reopened.fingerprint
    cached(changed, model, batch)
    assert calls[0] == 1 and changed.misses == 2


def test_cache_refuses_a_trainable_encoder():
    with pytest.raises(ValueError, match="frozen encoder"):
        VisionFeatureCache(load_model("tiny-random"))
