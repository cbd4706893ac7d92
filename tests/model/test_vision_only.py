"""A vision-only load (the llama.cpp engine's encoder): the vision parts alone, from a project folder and from an
official-layout folder, computing the same page embeddings as the whole model, without ever building the decoder."""
import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint.convert import load_model
from model.checkpoint.export import export_model
from model.official_layout import VISION_MODULES
from model.decoder import DeepseekOcr2TextDecoderLayer


@pytest.fixture(scope="module", params=["project", "official"])
def folder(request, tiny_model_dir, tmp_path_factory):
    if request.param == "project":
        return tiny_model_dir
    return export_model(str(tiny_model_dir), tmp_path_factory.mktemp("official") / "export", "fp32")


def test_vision_only_model_holds_the_vision_parts_alone(folder):
    whole, vision = load_model(folder), load_model(folder, vision_only=True)
    names = [name for name, _ in vision.named_parameters()]
    assert names and all(name.startswith(VISION_MODULES) for name in names)
    assert sorted(names) == sorted(name for name, _ in whole.named_parameters() if name.startswith(VISION_MODULES))
    with pytest.raises(AttributeError):  # no decoder to run: a call fails at once
        vision(input_ids=torch.tensor([[1, 2, 3]]))


def test_vision_only_model_computes_the_whole_models_page_embeddings(folder, tiny_model_dir):
    from model.processing import DeepSeekOCRProcessor

    whole, vision = load_model(folder), load_model(folder, vision_only=True)
    page = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8))
    batch = DeepSeekOCRProcessor.from_pretrained(tiny_model_dir)([[page]])

    def embeddings(model):
        with torch.inference_mode():
            features = model.encode_images(batch["pixel_values"], batch.get("pixel_values_tiles"))
            return model.image_embeddings(features, batch["images_spatial_crop"])

    torch.testing.assert_close(embeddings(vision), embeddings(whole), rtol=0, atol=0)


def test_vision_only_load_never_builds_a_decoder_layer(folder, monkeypatch):
    """Not built and then dropped: at real size the decoder layers are most of a load's time and memory."""
    built = []
    init = DeepseekOcr2TextDecoderLayer.__init__

    def counted(self, config, layer_idx, *args, **kwargs):
        built.append(layer_idx)
        init(self, config, layer_idx, *args, **kwargs)

    monkeypatch.setattr(DeepseekOcr2TextDecoderLayer, "__init__", counted)
    load_model(folder, vision_only=True)
    assert built == []
    whole = load_model(folder)  # the count does see the layers a load builds
    assert built == list(range(whole.config.num_hidden_layers)) and built
