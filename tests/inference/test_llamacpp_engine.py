"""The llama.cpp engine (`--engine llamacpp`): this project's encoder, llama.cpp's decoder on a GGUF export.

At F32 the hand-over is exact: llama.cpp's greedy tokens equal torch's, for text-only prompts and for pages, one
document or a batch of several. Quantized exports give finite logits whose agreement with F32 is reported. The
engine is reached the way users reach it (the summarizer's `engine=`, `--engine` on inference.infer and
evaluation.generate, ENGINE for the API), and what it cannot do is one line.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from config import GenerationSettings, LoadSettings
from evaluation.repetition import loops
from inference.summarizer import DeepSeekSummarizer
from tests.inference.test_loop_guard import WINDOW, bundled_texts

llama_cpp = pytest.importorskip("llama_cpp", reason="installed by bash setup.sh --dev (or --llamacpp)")

from inference.llamacpp_engine import TokenPicker  # noqa: E402  (needs llama_cpp's presence checked first)

FLOAT32 = LoadSettings(device="cpu", dtype="float32")  # exactness is between float32 computations
STEPS = 12
TEXTS = ["The method improves summaries of long documents, and the results hold on three datasets. " * 3,
         "A short note about cats."]


def export(tiny_model_dir, folder, quant):
    from model.checkpoint.export import main

    assert main(["--model", str(tiny_model_dir), "--output", str(folder), "--dtype", "fp32", "--format", "gguf",
                 "--quant", quant]) == 0
    return folder


@pytest.fixture(scope="module")
def f32_export(tiny_model_dir, tmp_path_factory):
    return export(tiny_model_dir, tmp_path_factory.mktemp("engine") / "f32", "f32")


@pytest.fixture(scope="module")
def engines(f32_export):
    """The same export on both engines."""
    return (DeepSeekSummarizer.from_pretrained(f32_export, FLOAT32),
            DeepSeekSummarizer.from_pretrained(f32_export, FLOAT32, engine="llamacpp"))


def documents(summarizer):
    """Two rendered texts of different lengths and one page image: a batch with left padding in torch."""
    texts = [summarizer.prepare_text(text) for text in TEXTS]
    return texts + [summarizer.prepare_image(texts[0].pages[0])]


def greedy(steps=STEPS, **extra):
    """Greedy decoding alone (no loop guard): what transformers' own `generate` does without the summarizer."""
    return GenerationSettings(max_new_tokens=steps, batch_size=8, no_repeat_ngram_size=0).generate_kwargs() | extra


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_pages_give_torchs_greedy_summaries(engines):
    torch_engine, llama_engine = engines
    expected = torch_engine.backend.generate(documents(torch_engine), greedy())
    got = llama_engine.backend.generate(documents(llama_engine), greedy())
    assert all(expected) and got == expected
    # One at a time too: the batch's sequences share a context without seeing each other.
    assert [llama_engine.backend.generate([doc], greedy())[0] for doc in documents(llama_engine)] == expected


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_text_only_prompt_gives_torchs_greedy_tokens(engines):
    torch_engine, llama_engine = engines
    ids = torch_engine.backend.processor.tokenizer(TEXTS[0]).input_ids
    with torch.no_grad():
        output = torch_engine.backend.model.generate(input_ids=torch.tensor([ids]), **greedy())
    picker = TokenPicker(llama_engine.backend.model.generation_config, greedy(), [ids])
    assert llama_engine.backend.decoder.generate([[ids]], STEPS, picker) == [output[0, len(ids):].tolist()]


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_generation_settings_apply_as_in_torch(engines):
    torch_engine, llama_engine = engines
    doc = documents(torch_engine)[:1]
    settings = greedy(no_repeat_ngram_size=2)
    summary = llama_engine.backend.generate(doc, settings)[0]
    assert summary == torch_engine.backend.generate(doc, settings)[0]
    assert summary != llama_engine.backend.generate(doc, greedy())[0]  # greedy alone repeats a bigram here
    forced = greedy(steps=6, min_new_tokens=6)
    ids, prompts = llama_engine.backend.prompts(doc)
    picker = TokenPicker(llama_engine.backend.model.generation_config, forced, ids)
    assert len(llama_engine.backend.decoder.generate(prompts, 6, picker)[0]) == 6
    with pytest.raises(ValueError, match="num_beams > 1"):
        llama_engine.backend.generate(doc, greedy(num_beams=2))


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_the_loop_guard_holds_on_llama_cpp(engines):
    """The tiny model loops without the guard and not with the default one (tests/inference/test_loop_guard.py:
    the same on torch)."""
    _, llama_engine = engines
    documents = [llama_engine.prepare_text(text) for text in bundled_texts()]
    unguarded = llama_engine.summarize_documents(documents, GenerationSettings(no_repeat_ngram_size=0))
    assert sum(loops(result.summary) for result in unguarded) >= len(documents) // 2
    guarded = llama_engine.summarize_documents(documents, GenerationSettings())
    assert [result.summary for result in guarded if loops(result.summary)] == []
    windowed = llama_engine.summarize_documents(documents, GenerationSettings(no_repeat_ngram_window=WINDOW))
    assert any(loops(result.summary) for result in windowed)  # the window reaches the engine


@pytest.mark.slow  # llama.cpp's converter and quantizer
def test_quantized_export_is_finite_and_reports_agreement(tiny_model_dir, tmp_path, engines, capsys):
    _, reference = engines
    quantized = DeepSeekSummarizer.from_pretrained(export(tiny_model_dir, tmp_path / "q8", "q8_0"), FLOAT32,
                                                   engine="llamacpp")
    doc = documents(reference)[:1]
    prompts = reference.backend.prompts(doc)[1]
    rows = {}

    def recorder(name, forced=None):
        def pick(seq, new, logits):
            rows.setdefault(name, []).append(logits)
            token = forced[len(new)] if forced else int(logits.argmax())
            return token, False
        return pick

    f32_tokens = reference.backend.decoder.generate(prompts, STEPS, recorder("f32"))[0]
    quantized.backend.decoder.generate(quantized.backend.prompts(doc)[1], STEPS, recorder("q8_0", f32_tokens))
    f32, q8 = np.stack(rows["f32"]), np.stack(rows["q8_0"])
    assert np.isfinite(q8).all()
    agreement = float((f32.argmax(-1) == q8.argmax(-1)).mean())
    with capsys.disabled():
        print(f"\nQ8_0 engine vs F32 on a page, teacher-forced: top-1 {agreement:.0%}, "
              f"max |logit diff| {np.abs(f32 - q8).max():.4f}")
    assert agreement >= 0.5  # random tiny weights: measured 100% (text prompts: tests/model/test_gguf.py)


@pytest.mark.slow  # llama.cpp's converter; a command in a fresh process
def test_infer_and_generate_commands_take_the_engine(f32_export, tmp_path, capsys, engines):
    from inference.infer import main as infer_main

    text = tmp_path / "doc.txt"
    text.write_text(TEXTS[0])
    flags = ["--engine", "llamacpp", "--device", "cpu", "--dtype", "float32", "--max_length", "8"]
    assert infer_main(["--model_path", str(f32_export), "--input_file", str(text), "--json", *flags]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary and summary == engines[0].summarize_text(TEXTS[0], max_length=8).summary
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "text": TEXTS[0], "summary": "x"}) + "\n")
    out = tmp_path / "pred.jsonl"
    done = subprocess.run([sys.executable, "-m", "evaluation.generate", str(data), "--model", str(f32_export),
                           "--output", str(out), "--render-text", "--engine", "llamacpp", "--device", "cpu",
                           "--dtype", "float32", "--max-new-tokens", "8"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["prediction"] == summary


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_api_serves_with_engine_from_environment(f32_export, engines):
    from inference.api_server import create_app
    from inference.api_settings import ServerSettings

    settings = ServerSettings.from_env({"MODEL_PATH": str(f32_export), "ENGINE": "llamacpp", "DTYPE": "float32",
                                        "DEVICE": "cpu"})
    assert settings.load.engine == "llamacpp"
    summarizer = DeepSeekSummarizer.from_pretrained(settings.model_path, settings.load)
    client = create_app(summarizer, settings).test_client()
    health = client.get("/health").get_json()
    assert (health["engine"], health["gguf"]) == ("llamacpp", "model-F32.gguf")  # the folder's one decoder file
    answer = client.post("/summarize/text", json={"text": TEXTS[1], "max_length": 8})
    assert answer.status_code == 200
    assert answer.get_json()["summary"] == engines[0].summarize_text(TEXTS[1], max_length=8).summary
    assert client.post("/summarize/text", json={"text": TEXTS[1], "num_beams": 2}).status_code == 400


def one_line_exit_2(capsys, argv):
    from inference.infer import main

    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_folder_without_gguf_is_one_line(tiny_model_dir, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text(TEXTS[1])
    err = one_line_exit_2(capsys, ["--model_path", str(tiny_model_dir), "--input_file", str(text),
                                   "--engine", "llamacpp"])
    assert "no decoder GGUF files" in err and "--format gguf" in err
    err = one_line_exit_2(capsys, ["--model_path", str(tiny_model_dir), "--input_file", str(text),
                                   "--engine", "llamacpp", "--gguf", str(tmp_path / "absent.gguf")])
    assert "GGUF file not found" in err
    err = one_line_exit_2(capsys, ["--model_path", str(tiny_model_dir), "--input_file", str(text),
                                   "--gguf", str(tmp_path / "absent.gguf")])
    assert "but argument --engine is 'torch'" in err  # a GGUF file is never silently ignored by the torch engine
    assert "invalid choice" in one_line_exit_2(capsys, ["--model_path", str(tiny_model_dir), "--input_file",
                                                        str(text), "--engine", "vllm"])


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_engine_not_installed_is_one_line(f32_export, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what `import llama_cpp` meets where it is not installed
    text = tmp_path / "doc.txt"
    text.write_text(TEXTS[1])
    err = one_line_exit_2(capsys, ["--model_path", str(f32_export), "--input_file", str(text),
                                   "--engine", "llamacpp"])
    assert "not installed" in err and "setup.sh --llamacpp" in err


@pytest.mark.slow  # llama.cpp's converter and quantizer
def test_generate_resumes_only_with_the_same_engine_gguf_and_precision(f32_export, tiny_model_dir, tmp_path,
                                                                       capsys):
    """A user's two cases: another quantization appended to a llama.cpp predictions file, and the torch engine
    finding it done. The engine, the GGUF file actually used and the precision are the run's identity."""
    import shutil

    from inference.generate import main as generate_main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": name, "text": text}) + "\n" for name, text in zip("ab", TEXTS)))
    out = tmp_path / "pred.jsonl"
    base = [str(data), "--model", str(f32_export), "--output", str(out), "--render-text", "--device", "cpu",
            "--dtype", "float32", "--max-new-tokens", "4"]
    llama = base + ["--engine", "llamacpp"]
    assert generate_main(llama + ["--max-samples", "1"]) == 0  # the folder's one GGUF: model-F32.gguf

    def refused(argv):
        capsys.readouterr()
        assert generate_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith("; use --overwrite or another --output\n")
        return err

    other = shutil.copy(f32_export / "gguf" / "model-F32.gguf", tmp_path / "model-Q4_K_M.gguf")
    assert "generated with gguf model-F32.gguf, not model-Q4_K_M.gguf;" in refused(llama + ["--gguf", str(other)])
    assert "generated with engine llamacpp, not torch;" in refused(base + ["--max-samples", "1"])
    # The default named explicitly is the same file: the run resumes and finishes.
    assert generate_main(llama + ["--gguf", str(f32_export / "gguf" / "model-F32.gguf")]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]
    # A settings file written before these keys were recorded was a torch run's, never a llama.cpp one's.
    settings = tmp_path / "pred.jsonl.settings.json"
    recorded = json.loads(settings.read_text())
    settings.write_text(json.dumps({key: value for key, value in recorded.items()
                                    if key not in ("engine", "gguf", "precision", "encoder_precision")}))
    assert "generated with engine torch, not llamacpp;" in refused(llama)
    # The GGUF file is found before anything is written or loaded, and a folder without one is one line.
    assert generate_main([str(data), "--model", str(tiny_model_dir), "--output", str(tmp_path / "p.jsonl"),
                          "--engine", "llamacpp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no decoder GGUF files" in err and not (tmp_path / "p.jsonl").exists()


@pytest.mark.slow  # llama.cpp's converter (the module's export)
def test_a_long_document_on_the_engine_stays_within_the_context(engines, monkeypatch):
    import dataclasses

    from inference.llamacpp_engine import LlamaCppDecoder

    engine = engines[1]
    uncapped = DeepSeekSummarizer(engine.backend, dataclasses.replace(engine.render_config, max_pages=None),
                                  engine.generation, engine.name)
    sequences = []
    generate = LlamaCppDecoder.generate

    def recorded(self, prompts, max_new_tokens, pick):
        sequences.extend(sum(len(run) for run in prompt) + max_new_tokens for prompt in prompts)
        return generate(self, prompts, max_new_tokens, pick)

    monkeypatch.setattr(LlamaCppDecoder, "generate", recorded)
    text = " ".join(TEXTS) * 500  # about 100 tiny pages: more than the 4,096 positions of tiny-random
    result = uncapped.summarize_text(text, max_new_tokens=STEPS)
    assert result.strategy == "hierarchical" and result.windows > 1 and result.context == 4096
    assert sequences and max(sequences) <= 4096
