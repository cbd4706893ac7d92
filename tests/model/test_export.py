"""Export to the official layout: the round trip is exact, the keys are the official checkpoint's, the golden
fixture's weights come out with their official checksums, and bad input, a signal or a kill leaves nothing behind
(a kill's leftovers are removed by the next export); --quant asks for GGUF files, in either case."""
import hashlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from config import GenerationSettings, LoadSettings, RenderConfig
from model.backbones.deepseek_ocr import BACKBONE
from model.checkpoint.convert import build_empty_model, load_model, load_official_state_dict
from model.checkpoint.export import INDEX_FILE, export_model, main, write_official_weights
from model.checkpoint.gguf import GgufError, decoder_gguf, gguf_files
from model.checkpoint.load import load_pretrained
from model.configuration import DeepSeekOCRConfig
from model.image_processing import DeepSeekOCRImageProcessor
from model.modeling import DeepSeekOCRForConditionalGeneration
from model.processing import EXPORTED_PROCESSOR_CONFIG_NAME
from model.tokenizer import load_tokenizer
from tests.inference.conftest import TINY_GENERATION, TINY_RENDER

FIXTURE = Path(__file__).parents[1] / "fixtures" / "deepseek_ocr_reference"
CLIP_PATCH = "model.vision_model.embeddings.patch_embedding.weight"
POSITION_IDS = "model.vision_model.embeddings.position_ids"  # a buffer the official code builds; not stored


def _read_export(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an exported folder, through its index (so a shard missing from the index is caught)."""
    weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
    state = {}
    for file in sorted(set(weight_map.values())):
        with safe_open(str(folder / file), framework="pt") as handle:
            for key in handle.keys():
                assert weight_map[key] == file
                state[key] = handle.get_tensor(key)
    assert set(state) == set(weight_map)
    return state


def _inputs(config):
    torch.manual_seed(1)
    placeholders = 73  # one 512x512 view: 8 rows of (8 + newline) + separator
    ids = torch.tensor([[0] + [config.image_token_id] * placeholders + [201, 23465, 14133]])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 512, 512)}


def test_round_trip_is_bit_identical(tmp_path):
    original = load_model("tiny-random")
    out = export_model("tiny-random", tmp_path / "export", dtype="float32", max_shard_size="10MB")
    assert len(set(json.loads((out / INDEX_FILE).read_text())["weight_map"].values())) > 1  # really sharded
    loaded = load_model(str(out))
    reference = original.state_dict()
    assert set(loaded.state_dict()) == set(reference)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(**_inputs(original.config)).logits, original(**_inputs(original.config)).logits)


def test_bfloat16_export_is_the_model_in_bfloat16(tmp_path):
    out = export_model("tiny-random", tmp_path / "export")  # the default dtype
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert {t.dtype for t in _read_export(out).values()} == {torch.bfloat16}
    loaded = load_model(str(out), dtype=torch.bfloat16)
    original = load_model("tiny-random", dtype=torch.bfloat16)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_real_size_model_exports_the_official_checkpoint_keys_and_shapes():
    with torch.device("meta"):
        model = DeepSeekOCRForConditionalGeneration(DeepSeekOCRConfig.preset("deepseek-ai/DeepSeek-OCR"))
    official = BACKBONE.official_state_dict(model)
    exported = {key: tuple(value.shape) for key, value in official.items()}
    fixture = json.loads((FIXTURE / "real_checkpoint_keys.json").read_text())
    entries = fixture["keys"]
    checkpoint = {e["key"]: tuple(e["shape"]) for e in entries if e["in_real_checkpoint_index"]}
    assert len(checkpoint) == 2710
    assert sorted(set(checkpoint) - set(exported)) == [] and sorted(set(exported) - set(checkpoint)) == []
    assert exported == checkpoint
    # The model's only key the checkpoint lacks is the buffer the official code builds itself.
    assert {e["key"] for e in entries} - set(exported) == {POSITION_IDS}
    # In bfloat16 the shards hold exactly the bytes of the real checkpoint (its index's total_size).
    assert sum(value.numel() for value in official.values()) * 2 == fixture["index_total_size_bytes"]


@pytest.fixture(scope="module")
def golden_export(official_state_dict, official_config, tmp_path_factory):
    model = build_empty_model(DeepSeekOCRConfig.from_official_config(official_config), torch.float32)
    load_official_state_dict(model, official_state_dict)
    folder = tmp_path_factory.mktemp("golden-export")
    write_official_weights(model, folder, torch.float32)
    return folder


def test_golden_weights_export_with_the_official_keys_and_checksums(golden_export):
    exported = _read_export(golden_export)
    fixture = json.loads((FIXTURE / "state_dict_keys.json").read_text())["keys"]
    buffers = {e["key"] for e in fixture if e["kind"] != "parameter"}
    assert buffers == {POSITION_IDS}
    assert set(exported) == {e["key"] for e in fixture} - buffers
    checksums = {e["key"]: e for e in json.loads((FIXTURE / "weights_checksums.json").read_text())["tensors"]}
    for key, tensor in exported.items():
        assert list(tensor.shape) == checksums[key]["shape"], key
        if key == CLIP_PATCH:  # never used by the official forward; present with its official shape
            continue
        digest = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
        assert digest == checksums[key]["sha256_le_bytes"], key
    assert exported[CLIP_PATCH].shape == (1024, 3, 14, 14)


def test_golden_config_carries_every_official_value(golden_export, official_config):
    exported = json.loads((golden_export / "config.json").read_text())
    provenance = {"_name_or_path", "transformers_version"}  # who wrote the file, not what the model is
    assert set(exported) == set(official_config) - {"_name_or_path"}
    for key in set(official_config) - provenance:
        assert exported[key] == official_config[key], key


@pytest.mark.slow  # a trained folder through export and the summarizer
def test_trained_folder_exports_its_settings_and_summarizes_identically(tiny_model_dir, tmp_path):
    from inference.summarizer import DeepSeekSummarizer

    out = export_model(str(tiny_model_dir), tmp_path / "export", dtype="float32")
    official_processor = json.loads((out / "processor_config.json").read_text())
    assert official_processor["processor_class"] == "DeepseekVLV2Processor" and "image_processor" not in official_processor
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizerFast"
    sample = "Budget <image> approved: <td>12</td> für 3 Jahre."
    assert load_tokenizer(str(out))(sample).input_ids == load_tokenizer()(sample).input_ids
    source = DeepSeekSummarizer.from_pretrained(tiny_model_dir, LoadSettings(device="cpu"))
    exported = DeepSeekSummarizer.from_pretrained(out, LoadSettings(device="cpu"))
    assert exported.render_config == TINY_RENDER and exported.generation == TINY_GENERATION
    assert exported.backend.processor.image_processor.to_dict() == source.backend.processor.image_processor.to_dict()
    text = "The committee met on Tuesday and approved the budget for the new library after a long debate."
    assert exported.summarize_text(text).summary == source.summarize_text(text).summary


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hi")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases = {
        "not a model folder": ["--model", str(not_a_model), "--output", str(tmp_path / "o1")],
        "model folder not found": ["--model", str(tmp_path / "absent"), "--output", str(tmp_path / "o2")],
        "unknown dtype": ["--model", "tiny-random", "--output", str(tmp_path / "o3"), "--dtype", "float8"],
        "not empty": ["--model", "tiny-random", "--output", str(busy)],
        # Checked before the model is looked for: an uncached hub id would be the error otherwise.
        "Unit 'XB' not supported": ["--model", "someone/absent", "--output", str(tmp_path / "o4"),
                                    "--max-shard-size", "2XB"],
        "'0' must be a positive size": ["--model", "someone/absent", "--output", str(tmp_path / "o5"),
                                        "--max-shard-size", "0"],
        "'-1GB' must be a positive size": ["--model", "someone/absent", "--output", str(tmp_path / "o6"),
                                           "--max-shard-size=-1GB"],
        "unknown dtype 'half'": ["--model", "someone/absent", "--output", str(tmp_path / "o7"), "--dtype", "half"],
    }
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "notes"]  # no output, no temporary folder
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert main(["--model", "tiny-random", "--output", str(busy), "--overwrite"]) == 0
    assert (busy / "config.json").is_file() and not (busy / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "notes"]


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("float16", torch.float16)])
def test_precision_names_are_the_one_vocabulary(precision, dtype, tmp_path, capsys):
    assert main(["--model", "tiny-random", "--output", str(tmp_path / "o"), "--dtype", precision,
                 "--max-shard-size", "1000000"]) == 0
    assert {t.dtype for t in _read_export(tmp_path / "o").values()} == {dtype}
    assert json.loads((tmp_path / "o" / "config.json").read_text())["torch_dtype"] == str(dtype)[len("torch."):]


@contextmanager
def transformers_messages():
    """The warnings transformers gives inside the block: its log records (once-only ones too) and Python
    warnings raised from its code."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.warning_once.cache_clear()  # a warning given earlier in this process must show again
    records, messages = [], []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        logger.removeHandler(handler)
    messages.extend(record.getMessage() for record in records)
    messages.extend(str(w.message) for w in caught if "transformers" in Path(w.filename).parts)


@pytest.fixture(scope="module")
def preset_export(tmp_path_factory):
    return export_model("tiny-random", tmp_path_factory.mktemp("preset") / "export", dtype="float32")


def test_preset_export_has_the_processor_of_the_default_render_mode(preset_export):
    saved = json.loads((preset_export / EXPORTED_PROCESSOR_CONFIG_NAME).read_text())
    assert saved["image_processor"] == DeepSeekOCRImageProcessor.from_mode(RenderConfig().mode).to_dict()
    loaded = load_pretrained(str(preset_export), LoadSettings(device="cpu"))
    assert loaded.processor.image_processor.to_dict() == saved["image_processor"]
    assert (loaded.render, loaded.generation) == (RenderConfig(), GenerationSettings())


@pytest.mark.slow  # loads the export in a fresh process
def test_loading_an_export_gives_no_transformers_warnings(tiny_model_dir, preset_export, tmp_path):
    from inference.summarizer import DeepSeekSummarizer

    trained_export = export_model(str(tiny_model_dir), tmp_path / "export", dtype="float32")
    for folder in (preset_export, trained_export):
        with transformers_messages() as messages:
            load_model(str(folder))
            load_pretrained(str(folder), LoadSettings(device="cpu"))
            DeepSeekSummarizer.from_pretrained(folder, LoadSettings(device="cpu"))
            load_tokenizer(str(folder))
        assert messages == [], folder


def test_exported_tokenizer_config_holds_no_machine_local_keys(tiny_model_dir, preset_export, tmp_path):
    trained_export = export_model(str(tiny_model_dir), tmp_path / "export", dtype="float32")
    for folder in (tiny_model_dir, preset_export, trained_export):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert not {"is_local", "local_files_only", "name_or_path", "_commit_hash"} & set(config), folder
    # A tokenizer loaded from files and saved again (training saves its processor so) stays clean too.
    load_tokenizer(str(trained_export)).save_pretrained(tmp_path / "again")
    assert "is_local" not in json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())



REPO = Path(__file__).parents[2]
# A stand-in for llama.cpp's converter (a file in LLAMA_CPP_CONVERTER) and quantizer (model.checkpoint.gguf's
# program): it writes part of its output file, then, when it is the tool EXPORT_HOLD names, writes its pid to
# EXPORT_MARKER and holds still, so the test's signal lands while it runs.
FAKE_TOOL = """
import os, sys, time
tool = "converter" if "--outfile" in sys.argv else "quantizer"
out = sys.argv[sys.argv.index("--outfile") + 1] if tool == "converter" else sys.argv[2]
open(out, "wb").write(b"GGUF, half written")
if os.environ["EXPORT_HOLD"] == tool:
    open(os.environ["EXPORT_MARKER"] + ".tmp", "w").write(str(os.getpid()))
    os.replace(os.environ["EXPORT_MARKER"] + ".tmp", os.environ["EXPORT_MARKER"])
    time.sleep(120)
"""
# `python -m model.export` with the fake tools, holding still after the official layout is written when
# EXPORT_HOLD is "settings".
EXPORT = """
import os, sys, time
from pathlib import Path
from model.checkpoint import export, gguf

gguf._QUANTIZE = (Path(os.environ["LLAMA_CPP_CONVERTER"]) / "convert_hf_to_gguf.py").read_text()
write_settings = export._write_settings

def write_and_hold(source, folder):
    write_settings(source, folder)
    if os.environ["EXPORT_HOLD"] == "settings":
        Path(os.environ["EXPORT_MARKER"]).write_text(str(os.getpid()))
        time.sleep(120)

export._write_settings = write_and_hold
sys.exit(export.main(sys.argv[1:]))
"""


class HeldExport:
    """An export in a child process, held at one step (`hold`) until the test sends it a signal."""

    def __init__(self, tmp_path: Path, hold: str, quant: str | None = None):
        self.output = tmp_path / "exports" / "out"
        self.marker = tmp_path / "held-pid"
        tools = tmp_path / "fake-llama-cpp"
        tools.mkdir()
        (tools / "convert_hf_to_gguf.py").write_text(FAKE_TOOL)
        env = {**os.environ, "LLAMA_CPP_CONVERTER": str(tools), "EXPORT_HOLD": hold,
               "EXPORT_MARKER": str(self.marker)}
        argv = ["--model", "tiny-random", "--output", str(self.output), "--dtype", "fp32",
                *(["--format", "gguf", "--quant", quant] if quant else [])]
        self.stderr = tmp_path / "stderr.txt"
        with open(self.stderr, "wb") as err:  # a file, not a pipe: a child whose pipe is full never gets there
            self.process = subprocess.Popen([sys.executable, "-c", EXPORT, *argv], cwd=REPO, env=env,
                                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def held_pid(self, timeout: float = 300) -> int:
        """The pid of the process holding still (the export, or its tool), once it holds."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            assert self.process.poll() is None, self.stderr.read_text()
            assert time.monotonic() < deadline, "the export never reached its held step"
            time.sleep(0.1)
        return int(self.marker.read_text())

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def held_export(tmp_path):
    exports = []

    def start(hold: str, quant: str | None = None) -> HeldExport:
        exports.append(HeldExport(tmp_path, hold, quant))
        return exports[-1]

    yield start
    for export in exports:
        export.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="--quant q4_k_m checks for llama-cpp-python (bash setup.sh --dev)")


@pytest.mark.slow  # an export in a fresh process, signalled
@pytest.mark.parametrize("hold, quant, signum", [
    ("settings", None, signal.SIGTERM),  # the official layout, written by this process
    ("converter", "f16", signal.SIGTERM),  # llama.cpp's converter running as a child process
    pytest.param("quantizer", "q4_k_m", signal.SIGINT, marks=needs_llama_cpp),  # its quantizer, over the F16 file
])
def test_an_interrupted_export_leaves_nothing(hold, quant, signum, held_export):
    export = held_export(hold, quant)
    held = export.held_pid()
    tmp = f".out.export-tmp-{export.process.pid}"
    assert [path.name for path in export.output.parent.iterdir()] == [tmp]  # mid-way: its temporary folder
    assert export.stop(signum) == 130
    lines = [line for line in export.stderr.read_text().splitlines() if line.strip()]
    assert "interrupted" in lines[-1] and "Traceback" not in export.stderr.read_text(), lines
    assert list(export.output.parent.iterdir()) == []  # no output, no temporary folder, no half-written GGUF
    assert held == export.process.pid or not _exists(held)  # a running tool was stopped with the export


@pytest.mark.slow  # an export in a fresh process, killed
def test_a_killed_exports_leftovers_are_removed_by_the_next_export(held_export, tmp_path):
    export = held_export("settings")
    export.held_pid()
    assert export.stop(signal.SIGKILL) == -signal.SIGKILL  # no handler runs: its temporary folder stays
    exports = export.output.parent
    killed = exports / f".out.export-tmp-{export.process.pid}"
    assert [path.name for path in exports.iterdir()] == [killed.name] and any(killed.iterdir())
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        kept = [exports / f".out.export-tmp-{running.pid}",  # an export of the same output still under way
                exports / f".out-2.export-tmp-{export.process.pid}"]  # another output's: that export's to clear
        for folder in kept:
            folder.mkdir()
        export_model("tiny-random", export.output, "fp32")
    finally:
        running.kill()
        running.wait()
    assert sorted(path.name for path in exports.iterdir()) == sorted(["out", *(folder.name for folder in kept)])
    assert (export.output / "config.json").is_file()


def test_quant_implies_gguf_in_either_case_and_official_refuses_it(tmp_path, monkeypatch, capsys):
    tools = tmp_path / "fake-llama-cpp"
    tools.mkdir()
    (tools / "convert_hf_to_gguf.py").write_text(FAKE_TOOL)
    monkeypatch.setenv("LLAMA_CPP_CONVERTER", str(tools))
    monkeypatch.setenv("EXPORT_HOLD", "nothing")  # the stand-in writes its file and ends
    # Upper case, as in the file name it writes; no --format: --quant alone asks for GGUF files.
    assert main(["--model", "tiny-random", "--output", str(tmp_path / "gguf"), "--quant", "Q8_0"]) == 0
    assert [path.name for path in gguf_files(tmp_path / "gguf")] == ["model-Q8_0.gguf"]
    capsys.readouterr()
    assert main(["--model", "tiny-random", "--output", str(tmp_path / "official"), "--format", "official",
                 "--quant", "q8_0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format official writes no GGUF files" in err
    assert not (tmp_path / "official").exists()


def test_two_decoder_files_ask_the_user_to_name_one(tmp_path):
    folder = tmp_path / "export"
    (folder / "gguf").mkdir(parents=True)
    files = [folder / "gguf" / name for name in ("model-F16.gguf", "model-Q8_0.gguf")]
    for path in files:
        path.write_bytes(b"GGUF")
    with pytest.raises(GgufError) as refused:
        decoder_gguf(folder)
    message = str(refused.value)
    assert "pass --gguf FILE (GGUF=FILE for the API server)" in message and all(str(f) in message for f in files)
    files[1].unlink()
    assert decoder_gguf(folder) == files[0]
