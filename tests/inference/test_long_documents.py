"""Long documents: every generate call stays within the decoder's context, whatever the strategy, and the result
says how the document was read.

A tiny DeepSeek-OCR whose context is 400 positions makes it fast: small-mode pages take 111 positions, tiny-mode
pages 73, the prompt's BOS and instruction 7 more, and summaries 4 tokens, so 3 pages fit as they are, 4 fit read
at tiny mode, and 6 need windows.
"""
import json
from pathlib import Path

import pytest

from config import GenerationSettings, LoadSettings, RenderConfig, save_run_settings
from inference.long_documents import LongDocumentError, legible_modes

REPO = Path(__file__).resolve().parents[2]
CONTEXT = 400
NEW_TOKENS = 4


def _bundled_text() -> str:
    rows = [json.loads(line) for line in (REPO / "data/bundled/scitldr-a/train.jsonl").open()]
    return "\n\n".join(" ".join(row["source"]) for row in rows)


def short_context_folder(folder: Path, font_size: int) -> Path:
    from model.checkpoint.convert import load_model
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    model = load_model("tiny-random")
    model.config.max_position_embeddings = CONTEXT
    model.generation_config.min_new_tokens = NEW_TOKENS  # a random model may end at once: summaries never empty
    model.save_pretrained(folder)
    DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode("small")).save_pretrained(folder)
    save_run_settings(folder, RenderConfig(mode="small", font_size=font_size),
                      GenerationSettings(max_new_tokens=NEW_TOKENS))
    (folder / "training_config.json").write_text(json.dumps({"task": "deepseek-ocr"}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    from inference.summarizer import DeepSeekSummarizer

    folder = short_context_folder(tmp_path_factory.mktemp("short-context"), font_size=14)
    return DeepSeekSummarizer.from_pretrained(folder, LoadSettings(device="cpu", dtype="float32"))


def text_of_pages(summarizer, pages: int) -> str:
    """The shortest start of the bundled text that renders to `pages` pages in the summarizer's settings."""
    text, low, high = _bundled_text(), 1, 200_000
    while low < high:
        middle = (low + high) // 2
        if len(summarizer.prepare_text(text[:middle]).pages) >= pages:
            high = middle
        else:
            low = middle + 1
    assert len(summarizer.prepare_text(text[:low]).pages) == pages
    return text[:low]


@pytest.fixture
def calls(monkeypatch):
    """(rows, longest prompt, max_new_tokens, global view side) of each torch generate call."""
    from model.modeling import DeepSeekOCRForConditionalGeneration

    seen = []
    generate = DeepSeekOCRForConditionalGeneration.generate

    def recorded(self, *args, **kwargs):
        longest = int(kwargs["attention_mask"].sum(dim=1).max())
        seen.append((kwargs["input_ids"].shape[0], longest, kwargs["max_new_tokens"],
                     kwargs["pixel_values"].shape[-1] if "pixel_values" in kwargs else None))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(DeepSeekOCRForConditionalGeneration, "generate", recorded)
    return seen


def _within_context(calls, context=CONTEXT):
    assert calls and all(prompt + new <= context for _, prompt, new, _ in calls), calls


def test_a_document_that_fits_is_read_as_it_is(reader, calls):
    result = reader.summarize_text(text_of_pages(reader, 3))
    assert (result.strategy, result.windows, result.levels, result.pages_read, result.read_mode) == \
        ("direct", 1, 1, 3, None)
    assert result.tokens_read == 3 * 111 and result.prompt_tokens == calls[0][1] and result.context == CONTEXT
    assert result.vision_tokens == 3 * 100  # the paper's count at small mode
    _within_context(calls)


def test_fit_reads_the_pages_at_the_next_mode_down(reader, calls):
    result = reader.summarize_text(text_of_pages(reader, 4))
    assert (result.strategy, result.windows, result.pages_read, result.read_mode) == ("fit", 1, 4, "tiny")
    assert result.tokens_read == 4 * 73 and calls[0][3] == 512  # the 640 px pages read in a 512 px view
    assert result.vision_tokens == 4 * 64  # tiny mode's, the tokens the decoder read
    _within_context(calls)


def test_hierarchical_summarizes_the_windows_together_then_their_summaries(reader, calls):
    result = reader.summarize_text(text_of_pages(reader, 6))
    assert (result.strategy, result.windows, result.levels, result.pages_read) == ("hierarchical", 2, 2, 6)
    assert [rows for rows, *_ in calls] == [2, 1]  # both windows in one generate call, then their summaries'
    assert result.summary
    _within_context(calls)


@pytest.mark.parametrize("strategy", ["auto", "hierarchical", "truncate"])
def test_no_strategy_runs_a_sequence_past_the_context(reader, calls, strategy):
    text = text_of_pages(reader, 6)
    result = reader.summarize_text(text, long_documents=strategy)
    _within_context(calls)
    if strategy == "truncate":
        assert (result.strategy, result.pages_read, result.levels) == ("truncate", 3, 1)


def test_the_error_strategy_names_pages_tokens_and_context(reader, calls):
    with pytest.raises(LongDocumentError) as refused:
        reader.summarize_text(text_of_pages(reader, 4), long_documents="error")
    assert str(refused.value) == ("a document of 4 pages (444 positions) does not fit: the model reads at most 389 "
                                  "positions of a document beside a summary of 4 tokens (context 400); set "
                                  "long_documents to fit, hierarchical or truncate")
    assert not calls


def test_fit_keeps_text_above_the_legibility_floor(tmp_path, calls):
    from inference.summarizer import DeepSeekSummarizer

    # 10 px text read in a 512 px view of a 640 px page would be 8 px high: below the floor, so no fit.
    assert legible_modes("small", 640, 14) == ["tiny"] and legible_modes("small", 640, 10) == []
    assert legible_modes("base", 1024, 16) == ["small"] and legible_modes("gundam", 1920, 12) == []
    small_font = DeepSeekSummarizer.from_pretrained(short_context_folder(tmp_path, font_size=10),
                                                    LoadSettings(device="cpu", dtype="float32"))
    text = text_of_pages(small_font, 4)
    with pytest.raises(LongDocumentError, match="lowest resolution mode that keeps its text legible"):
        small_font.summarize_text(text, long_documents="fit")
    assert small_font.summarize_text(text).strategy == "hierarchical"
    _within_context(calls)


def test_a_seq2seq_baseline_reads_long_text_in_windows_of_its_source_length(seq2seq_model_dir, monkeypatch):
    from transformers import BartForConditionalGeneration

    from inference.summarizer import DeepSeekSummarizer

    sources = []
    generate = BartForConditionalGeneration.generate

    def recorded(self, *args, **kwargs):
        sources.append(int(kwargs["attention_mask"].sum(dim=1).max()))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(BartForConditionalGeneration, "generate", recorded)
    baseline = DeepSeekSummarizer.from_pretrained(seq2seq_model_dir, LoadSettings(device="cpu"))
    result = baseline.summarize_text(_bundled_text()[:3000])  # about 600 tokens; the folder reads 64
    assert result.strategy == "hierarchical" and result.windows > 1 and result.levels > 1
    assert max(sources) <= 64
    truncated = baseline.summarize_text(_bundled_text()[:3000], long_documents="truncate")
    assert (truncated.strategy, truncated.windows) == ("truncate", 1) and truncated.tokens_read < result.tokens_read


def test_predictions_say_how_each_document_was_read(reader, tmp_path):
    from config.jobs import GenerateJob
    from inference.generate import generate

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": str(pages), "text": text_of_pages(reader, pages)}) + "\n"
                            for pages in (3, 4, 6)))
    folder = str(reader.name)
    generate(GenerateJob(data_file=str(data), model=folder, output=str(tmp_path / "p.jsonl"),
                         generation=GenerationSettings(max_new_tokens=NEW_TOKENS)))
    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert [(lines[i]["strategy"], lines[i]["windows"]) for i in ("3", "4", "6")] == \
        [("direct", 1), ("fit", 1), ("hierarchical", 2)]
    assert all(line["prompt_tokens"] + NEW_TOKENS <= line["context"] == CONTEXT for line in lines.values())


def _long_text(characters: int) -> str:
    text = _bundled_text()
    return (text * (characters // len(text) + 1))[:characters]


@pytest.mark.slow  # renders about 90 pages and encodes them
def test_a_300000_character_document_on_tiny_random_stays_within_its_context(calls):
    from inference.summarizer import DeepSeekSummarizer

    tiny = DeepSeekSummarizer.from_pretrained("tiny-random", LoadSettings(device="cpu", dtype="float32"))
    result = tiny.summarize_text(_long_text(300_000), max_new_tokens=8)
    assert result.context == 4096 and result.strategy == "hierarchical" and result.summary
    _within_context(calls, 4096)


def test_a_300000_character_document_at_real_size_stays_within_its_context():
    """The real model's geometry and context (8,192 positions, small-mode pages, 128-token summaries): the planning
    and the context check are what is tested, so the network is a stand-in that records each prompt and writes
    fixed tokens."""
    import torch

    from inference.backends import OCRBackend
    from inference.summarizer import DeepSeekSummarizer
    from model.configuration import DeepSeekOCRConfig
    from model.image_processing import DeepSeekOCRImageProcessor
    from model.processing import DeepSeekOCRProcessor
    from model.tokenizer import load_tokenizer

    class RealSizeStandIn:
        config = DeepSeekOCRConfig()
        prompts: list[int] = []

        def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
            self.prompts.extend(attention_mask.sum(dim=1).tolist())
            return torch.cat([input_ids, torch.full((len(input_ids), max_new_tokens), 1000)], dim=1)

    processor = DeepSeekOCRProcessor(load_tokenizer(), DeepSeekOCRImageProcessor.from_mode("small"))
    model = RealSizeStandIn()
    summarizer = DeepSeekSummarizer(OCRBackend(model, processor, torch.device("cpu")), RenderConfig(),
                                    GenerationSettings(), "real-size")
    result = summarizer.summarize_text(_long_text(300_000))
    assert result.context == 8192 and result.pages > 80 and result.summary
    assert (result.strategy, result.read_mode) == ("fit", "tiny")  # about 90 small pages fit read at tiny mode
    assert model.prompts and max(model.prompts) + 128 <= 8192


def test_a_led_baseline_reads_its_encoder_positions_with_a_global_first_token(tmp_path, monkeypatch):
    """A long-input checkpoint (LED) is read to its encoder's positions, not a BART's 1024, and its first token
    attends globally, as its summarization checkpoints were trained."""
    import torch
    from transformers import LEDConfig, LEDForConditionalGeneration

    from inference.summarizer import DeepSeekSummarizer
    from model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    config = LEDConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_encoder_position_embeddings=2048, max_decoder_position_embeddings=64, attention_window=16,
                       pad_token_id=2, bos_token_id=0, eos_token_id=1, decoder_start_token_id=1)
    torch.manual_seed(0)
    LEDForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    masks = []
    generate = LEDForConditionalGeneration.generate

    def recorded(self, *args, **kwargs):
        masks.append((kwargs["attention_mask"].sum(dim=1).tolist(), kwargs.get("global_attention_mask")))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(LEDForConditionalGeneration, "generate", recorded)
    baseline = DeepSeekSummarizer.from_pretrained(tmp_path, LoadSettings(device="cpu"))
    result = baseline.summarize_text(_bundled_text()[:6000], max_new_tokens=4)  # about 1,200 tokens
    assert (result.strategy, result.windows, result.context) == ("direct", 1, 2048)
    (lengths, global_mask), = masks
    assert lengths[0] > 1024 and global_mask[0].tolist() == [1] + [0] * (lengths[0] - 1)
