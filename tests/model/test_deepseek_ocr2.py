"""DeepSeek-OCR-2 behind the backbone seam, held to transformers' own class and processor: the same pages give the
same placeholders and the same first-token logits, a folder transformers' class saved is recognized by its
content and summarizes, and beam search over tiled pages reads each document's own tiles."""
import dataclasses
import json

import pytest
import torch
from PIL import Image, ImageDraw

from config import LoadSettings
from model.backbones import deepseek_ocr2
from model.processing import DEFAULT_INSTRUCTION

MODES = {  # render mode -> transformers' image processor settings that read a page the same way
    "small": dict(size={"height": 768, "width": 768}, tile_size=768, crop_to_patches=False),
    "base": dict(size={"height": 1024, "width": 1024}, tile_size=1024, crop_to_patches=False),
    "gundam": dict(),  # transformers' defaults: a 1024 view and 768 tiles, 2 to 6 of them
}


def page(width: int, height: int, text: str = "DeepSeek-OCR-2 reads this page.") -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for row in range(0, height - 20, 40):
        draw.text((10, row + 10), f"{text} line {row // 40}", fill="black")
    return image


@pytest.fixture(scope="module")
def saved_by_transformers(tmp_path_factory):
    """The preset's weights saved by transformers' own class (its default, official tensor names), in a folder
    whose name says nothing."""
    from transformers import DeepseekOcr2ForConditionalGeneration

    from model.checkpoint.convert import load_model

    folder = tmp_path_factory.mktemp("some-model")
    ours = load_model(deepseek_ocr2.TINY_PRESET)
    plain = DeepseekOcr2ForConditionalGeneration(ours.config)
    plain.load_state_dict(ours.state_dict())
    plain.save_pretrained(folder)
    return folder


def transformers_inputs(images: list[Image.Image], mode: str):
    from transformers import DeepseekOcr2ImageProcessorPil, DeepseekOcr2Processor

    from model.tokenizer import load_tokenizer

    processor = DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(**MODES[mode]),
                                      tokenizer=load_tokenizer())
    return processor(images=images, text="<image>" * len(images) + "\n" + DEFAULT_INSTRUCTION, return_tensors="pt")


@pytest.mark.parametrize("mode,size", [
    ("small", (640, 640)), ("gundam", (1280, 1920)),
    # The other views and grids, in the whole suite (the fast lane keeps one view and one tiled page).
    *[pytest.param(mode, size, marks=pytest.mark.slow)
      for mode, size in [("base", (1024, 1024)), ("gundam", (1800, 2400)), ("gundam", (640, 640))]]])
def test_first_token_logits_equal_transformers_own_class_and_processor(saved_by_transformers, mode, size):
    from transformers import DeepseekOcr2ForConditionalGeneration

    from inference.summarizer import DeepSeekSummarizer

    images = [page(*size)]
    reference_inputs = transformers_inputs(images, mode)
    reference = DeepseekOcr2ForConditionalGeneration.from_pretrained(saved_by_transformers, dtype=torch.float32)
    with torch.no_grad():
        expected = reference(**reference_inputs).logits[0, -1]

    summarizer = DeepSeekSummarizer.from_pretrained(saved_by_transformers, LoadSettings(device="cpu",
                                                                                        dtype="float32"))
    processor = summarizer.backend.processor.with_mode(mode)
    inputs = processor([images], padding_side="left")
    assert inputs["input_ids"].tolist() == reference_inputs["input_ids"].tolist()  # the same placeholders
    assert processor.page_positions(images[0]) == int((reference_inputs["input_ids"] == 128815).sum())
    batch = {key: inputs[key] for key in ("input_ids", "attention_mask", "pixel_values", "num_local_patches",
                                          "pixel_values_local") if key in inputs}
    with torch.no_grad():
        logits = summarizer.backend.model(**batch).logits[0, -1]
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0), (logits - expected).abs().max()


def test_a_folder_saved_by_transformers_is_recognized_by_content_and_summarizes(saved_by_transformers):
    from inference.summarizer import DeepSeekSummarizer
    from model.checkpoint.source import resolve_model_source

    source = resolve_model_source(str(saved_by_transformers))
    assert (source.kind, source.backbone.name) == ("project", "deepseek-ocr-2")
    summarizer = DeepSeekSummarizer.from_pretrained(saved_by_transformers, LoadSettings(device="cpu"))
    summarizer.backend.model.generation_config.min_new_tokens = 4  # a random model may end at once
    result = summarizer.summarize_text("A short report. " * 40, max_new_tokens=4)
    assert result.summary and result.pages == 1 and result.vision_tokens == 144  # a small-mode page: a 768 view


def test_page_positions_match_transformers_processor_per_mode():
    processor = deepseek_ocr2.BACKBONE
    for mode, size, tokens in [("small", (640, 640), 144), ("base", (1024, 1024), 256),
                               ("large", (1280, 1280), 256 + 4 * 144), ("gundam", (1280, 1920), 256 + 6 * 144),
                               ("page", (1800, 2400), 256 + 6 * 144)]:
        pages = processor.page_processor(mode)
        counted = int((transformers_inputs([page(*size)], "gundam" if mode in ("large", "page") else mode)
                       ["input_ids"] == 128815).sum())
        assert (pages.vision_tokens(*size), pages.num_placeholders(pages.crop_grid(*size))) == (tokens, counted)
        assert counted == tokens + 1  # the view separator


def test_tiny_mode_is_refused_in_one_line():
    from config import UserError

    with pytest.raises(UserError, match="its views are 768 and 1024 px"):
        deepseek_ocr2.BACKBONE.page_processor("tiny")


@pytest.mark.slow  # generation with beams over several tiled pages
def test_beam_search_reads_each_documents_own_tiles(saved_by_transformers):
    """Two documents of tiled pages (2x3 and 2x2 tiles) in one batch with 2 beams give what each gives alone."""
    from inference.summarizer import DeepSeekSummarizer

    summarizer = DeepSeekSummarizer.from_pretrained(saved_by_transformers, LoadSettings(device="cpu",
                                                                                        dtype="float32"))
    processor = summarizer.backend.processor.with_mode("gundam")
    documents = [[page(1280, 1920, "first")], [page(1280, 1280, "second"), page(1800, 2400, "third")]]
    settings = dict(max_new_tokens=3, min_new_tokens=3, num_beams=2, do_sample=False, no_repeat_ngram_size=0)

    def generate(docs):
        batch = {k: v for k, v in processor(docs, padding_side="left").items()
                 if k in ("input_ids", "attention_mask", "pixel_values", "num_local_patches", "pixel_values_local")}
        with torch.no_grad():
            out = summarizer.backend.model.generate(**batch, **settings, output_scores=True,
                                                    return_dict_in_generate=True)
        return out.sequences[:, batch["input_ids"].shape[1]:].tolist(), out.sequences_scores

    (together, scores), alone = generate(documents), [generate([doc]) for doc in documents]
    assert together == alone[0][0] + alone[1][0]
    # The scores read the pages: another document's tiles would move them.
    assert torch.allclose(scores, torch.cat([alone[0][1], alone[1][1]]), atol=1e-5), scores


def test_save_pretrained_writes_names_the_trainer_resumes_and_transformers_class(tmp_path):
    from transformers import DeepseekOcr2ForConditionalGeneration

    from model.checkpoint.convert import load_model
    from safetensors.torch import load_file

    model = load_model(deepseek_ocr2.TINY_PRESET)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(model.state_dict())  # load_state_dict on a checkpoint finds every weight
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "DeepseekOcr2ForConditionalGeneration"]
    again = DeepseekOcr2ForConditionalGeneration.from_pretrained(tmp_path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow  # the command and the app as the fast lane checks them for DeepSeek-OCR, on the other backbone
def test_infer_and_the_api_serve_a_deepseek_ocr2_folder(saved_by_transformers, tmp_path, capsys):
    from inference import infer
    from inference.api_server import create_app
    from inference.api_settings import ServerSettings
    from inference.summarizer import DeepSeekSummarizer

    article = tmp_path / "article.txt"
    article.write_text("Rivers carry water to the sea. " * 30, encoding="utf-8")
    assert infer.main(["--model_path", str(saved_by_transformers), "--input_file", str(article),
                       "--max_new_tokens", "2", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["pages"], printed["vision_tokens"], printed["strategy"]) == (1, 144, "direct")

    summarizer = DeepSeekSummarizer.from_pretrained(saved_by_transformers, LoadSettings(device="cpu"))
    client = create_app(summarizer, ServerSettings(batch_wait_ms=10)).test_client()
    response = client.post("/summarize/text", json={"text": article.read_text(), "max_new_tokens": 2})
    assert response.status_code == 200 and response.get_json()["vision_tokens"] == 144


@pytest.fixture(scope="module")
def official_export(tmp_path_factory):
    """(the preset saved as training saves it, its export in the official layout)."""
    from model.checkpoint.convert import load_model
    from model.checkpoint.export import main

    trained = tmp_path_factory.mktemp("trained")  # transformers' names, as training saves
    load_model(deepseek_ocr2.TINY_PRESET).save_pretrained(trained)
    folder = tmp_path_factory.mktemp("export") / "official"
    assert main(["--model", str(trained), "--output", str(folder), "--dtype", "fp32"]) == 0
    return trained, folder


@pytest.mark.slow  # an export and four loads
def test_the_official_layout_round_trips_and_the_encoder_loads_alone_from_either_layout(official_export):
    from model.checkpoint.convert import load_model

    trained, folder = official_export
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["DeepseekOCR2ForCausalLM"] and "qwen2-0-5b" in config["vision_config"]["width"]
    preset, exported = load_model(deepseek_ocr2.TINY_PRESET).state_dict(), load_model(str(folder)).state_dict()
    assert set(preset) == set(exported) and all(torch.equal(preset[k], exported[k]) for k in preset)
    for source in (trained, folder):  # the engine's encoder, read without the decoder
        vision = load_model(str(source), vision_only=True).state_dict()
        assert vision and all(torch.equal(preset[k], v) for k, v in vision.items())
        assert not any(k.startswith(("model.language_model.", "lm_head.")) for k in vision)


@pytest.mark.slow  # llama.cpp's converter
def test_the_llamacpp_engine_gives_torchs_greedy_tokens_on_the_f32_gguf(official_export, tmp_path):
    """llama.cpp's converter reads the official layout (architecture DeepseekOCR2ForCausalLM), and on the F32 GGUF
    the engine's greedy tokens for pages equal torch's."""
    pytest.importorskip("llama_cpp", reason="installed by bash setup.sh --dev (or --llamacpp)")
    from config import GenerationSettings
    from inference.summarizer import DeepSeekSummarizer
    from model.checkpoint.export import main

    folder = tmp_path / "gguf-export"
    assert main(["--model", str(official_export[0]), "--output", str(folder), "--dtype", "fp32", "--format", "gguf",
                 "--quant", "f32"]) == 0
    assert (folder / "gguf" / "model-F32.gguf").is_file()
    float32 = LoadSettings(device="cpu", dtype="float32")
    on_torch = DeepSeekSummarizer.from_pretrained(folder, float32)
    on_llama = DeepSeekSummarizer.from_pretrained(folder, float32, engine="llamacpp")
    greedy = GenerationSettings(max_new_tokens=8, batch_size=4, no_repeat_ngram_size=0).generate_kwargs()
    small = [on_torch.prepare_text("Rivers carry water to the sea. " * 30), on_torch.prepare_image(page(640, 640))]
    # Tiled pages too (gundam: the tiles' rows, the global view's, the separator, as the engine lays them out).
    tiled = [dataclasses.replace(on_torch.prepare_image(page(1280, 1920)), read_mode="gundam"),
             dataclasses.replace(on_torch.prepare_image(page(1800, 2400)), read_mode="gundam")]
    for documents in (small, tiled):
        expected = on_torch.backend.generate(documents, greedy)
        assert all(expected) and on_llama.backend.generate(documents, greedy) == expected


# deepseek-ai/DeepSeek-OCR-2's config.json as published (the fields other readers of the file quote, e.g. OpenVINO
# GenAI's tests): DeepSeek-OCR's schema, whose SAM entry keeps DeepSeek-OCR's downsample channels [512, 1024]
# although the official code builds a neck ending at 896 channels (the Qwen2 encoder's width), whatever it says.
PUBLISHED_CONFIG = {
    "model_type": "deepseek_vl_v2", "architectures": ["DeepseekOCR2ForCausalLM"],
    "candidate_resolutions": [[1024, 1024]],
    "language_config": {"vocab_size": 129280, "hidden_size": 1280, "intermediate_size": 6848,
                        "moe_intermediate_size": 896, "num_hidden_layers": 12, "num_attention_heads": 10,
                        "num_key_value_heads": 10, "n_routed_experts": 64, "n_shared_experts": 2,
                        "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
                        "bos_token_id": 0, "eos_token_id": 1},
    "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deepencoderv2", "model_type": "vision",
                      "width": {"sam_vit_b": {"width": 768, "layers": 12, "heads": 12,
                                              "global_attn_indexes": [2, 5, 8, 11],
                                              "downsample_channels": [512, 1024]},
                                "qwen2-0-5b": {"dim": 896}}},
    "projector_config": {"input_dim": 896, "n_embed": 1280, "projector_type": "linear",
                         "model_type": "mlp_projector"},
}


def test_the_published_official_config_is_recognized_and_builds_the_real_architecture():
    from model import backbones

    assert backbones.recognize(PUBLISHED_CONFIG) == (deepseek_ocr2.BACKBONE, "official")
    config = deepseek_ocr2.config_from_official(PUBLISHED_CONFIG)
    real = deepseek_ocr2.architecture()
    assert config.vision_config.to_dict() == real.vision_config.to_dict()
    assert config.vision_config.sam_config.downsample_channels[-1] == config.vision_config.encoder_config.hidden_size
    assert config.text_config.to_dict() == real.text_config.to_dict()
    with torch.device("meta"):  # the real sizes, shapes only: the SAM neck feeds the Qwen2 encoder
        model = deepseek_ocr2.BACKBONE.build_empty(config, torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 3_389_119_360
    # The decoder is read and checked as DeepSeek-OCR's is.
    with pytest.raises(ValueError, match="MLA"):
        deepseek_ocr2.config_from_official({**PUBLISHED_CONFIG, "language_config": {
            **PUBLISHED_CONFIG["language_config"], "use_mla": True}})


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_preset_takes_the_attention_asked_for(attention):
    from model.checkpoint.convert import load_model

    config = load_model("tiny-random-ocr2", attn_implementation=attention).config
    assert {config.text_config._attn_implementation, config.vision_config._attn_implementation} == {attention}
