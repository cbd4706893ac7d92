"""GGUF export (python -m model.export --format gguf): files written by llama.cpp's own converter and quantizer
load in llama.cpp, and at F32 its greedy tokens equal torch's; quantized files give finite logits whose agreement
with F32 is reported; each --quant gives the file type llama.cpp defines for it; bad requests are one line before
anything loads."""
import sys

import numpy as np
import pytest
import torch

from model.checkpoint import gguf as gguf_export
from model.checkpoint.convert import load_model
from model.checkpoint.export import main
from model.tokenizer import load_tokenizer

llama_cpp = pytest.importorskip("llama_cpp", reason="installed by bash setup.sh --dev (or --llamacpp)")
PROMPT = "The method improves summaries of long documents, and the results hold on three datasets."
STEPS = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The decoder file of a tiny-random export at a quantization, exported once per module."""
    files = {}

    def export(quant: str):
        if quant not in files:
            folder = tmp_path_factory.mktemp(quant) / "export"
            assert main(["--model", "tiny-random", "--output", str(folder), "--dtype", "fp32", "--format", "gguf",
                         "--quant", quant]) == 0
            found = gguf_export.gguf_files(folder)
            assert [f.name for f in found] == [f"model-{quant.upper()}.gguf"]  # the tiny SAM gets no projector
            files[quant] = found[0]
        return files[quant]

    return export


@pytest.fixture(scope="module")
def f32_gguf(exported):
    return exported("f32")


class Engine:
    """llama.cpp's decoder on token ids: its last-position logits after each evaluated batch."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)

    def logits(self) -> np.ndarray:
        row = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.llm.n_vocab(),)).copy()

    def greedy(self, ids: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
        self.llm.reset()
        self.llm.eval(ids)
        tokens, rows = [], []
        for _ in range(steps):
            rows.append(self.logits())
            tokens.append(int(rows[-1].argmax()))
            self.llm.eval([tokens[-1]])
        return tokens, rows

    def close(self):
        self.llm.close()


@pytest.mark.slow  # llama.cpp's converter
def test_f32_gguf_gives_torchs_greedy_tokens(f32_gguf):
    ids = load_tokenizer()(PROMPT).input_ids
    model = load_model("tiny-random", dtype=torch.float32)
    with torch.no_grad():
        expected = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=STEPS, do_sample=False)[0, len(ids):]
        first = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    engine = Engine(f32_gguf)
    tokens, rows = engine.greedy(ids, STEPS)
    engine.close()
    assert tokens == expected.tolist()
    assert np.abs(rows[0] - first).max() < 1e-3  # float32 on both sides, other summation orders


@pytest.mark.slow  # llama.cpp's converter and quantizer
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantized_gguf_is_finite_and_reports_its_agreement_with_f32(quant, f32_gguf, exported, capsys):
    ids = load_tokenizer()(PROMPT).input_ids
    reference = Engine(f32_gguf)
    f32_tokens, f32_rows = reference.greedy(ids, STEPS)
    reference.close()
    engine = Engine(exported(quant))
    engine.llm.reset()
    engine.llm.eval(ids)
    rows = [engine.logits()]
    for token in f32_tokens[:-1]:  # teacher-forced on the F32 tokens: logits compared position by position
        engine.llm.eval([token])
        rows.append(engine.logits())
    engine.close()
    assert all(np.isfinite(row).all() for row in rows)
    agreement = np.mean([row.argmax() == ref.argmax() for row, ref in zip(rows, f32_rows)])
    error = max(np.abs(row - ref).max() for row, ref in zip(rows, f32_rows))
    with capsys.disabled():
        print(f"\n{quant} against F32 over {STEPS} positions: top-1 agreement {agreement:.0%}, max |logit diff| "
              f"{error:.3f}")


@pytest.fixture(scope="module")
def gguf_py():
    """llama.cpp's own GGUF package (gguf-py, shipped with the converter): its reader and its constants."""
    sys.path.insert(0, str(gguf_export.converter_dir() / "gguf-py"))
    try:
        import gguf
    except ImportError:
        pytest.skip(f"llama.cpp's gguf-py not found in {gguf_export.converter_dir()} (bash setup.sh --dev)")
    finally:
        sys.path.pop(0)
    return gguf


# Each --quant and the names llama.cpp gives its file type (LlamaFileType) and, where a plain 2-D weight holds it
# whatever its width, its tensor type (GGMLQuantizationType; Q4_K_M picks per tensor, q5/q8 at the tiny widths).
FILE_TYPES = {"f32": ("ALL_F32", "F32"), "f16": ("MOSTLY_F16", "F16"), "q8_0": ("MOSTLY_Q8_0", "Q8_0"),
              "q4_k_m": ("MOSTLY_Q4_K_M", None)}


@pytest.mark.slow  # llama.cpp's converter and quantizer
@pytest.mark.parametrize("quant", list(FILE_TYPES))
def test_each_quant_writes_the_file_type_llama_cpp_defines_for_it(quant, exported, gguf_py):
    file_type, tensor_type = FILE_TYPES[quant]
    reader = gguf_py.GGUFReader(exported(quant))
    assert reader.fields["general.file_type"].contents() == gguf_py.LlamaFileType[file_type]
    if tensor_type is not None:
        attention = next(tensor for tensor in reader.tensors if tensor.name == "blk.0.attn_q.weight")
        assert attention.tensor_type == gguf_py.GGMLQuantizationType[tensor_type]


@pytest.mark.parametrize("args, message", [
    (["--quant", "q3"], "unknown --quant 'q3'"),
    (["--quant", "f16"], "needs llama.cpp's converter"),
])
def test_bad_requests_are_one_line_before_loading(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLAMA_CPP_CONVERTER", str(tmp_path / "no-converter"))
    output = tmp_path / "out"
    assert main(["--model", "tiny-random", "--output", str(output), "--format", "gguf", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not output.exists()
