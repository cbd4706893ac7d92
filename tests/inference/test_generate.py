"""Batch generation over a prepared JSONL: one line per record, resumable, never a half line; still the command
`python -m evaluation.generate` (the reference README's name)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference.generate import main
from inference.predictions import completed_ids

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [json.loads(line) for line in (REPO / "data/bundled/scitldr-a/test.jsonl").open()][:5]
    path = tmp_path_factory.mktemp("gen") / "test.jsonl"
    path.write_text("".join(json.dumps({"id": r["paper_id"], "text": " ".join(r["source"]),
                                        "summary": r["target"][0], "references": r["target"]}) + "\n"
                            for r in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_record_with_figures(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "pred.jsonl"
    assert main([str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
                 "--max-new-tokens", "4", "--batch-size", "2"]) == 0
    lines = _read(out)
    ids = [json.loads(line)["id"] for line in data_file.read_text().splitlines()]
    assert [line["id"] for line in lines] == ids
    for line in lines:
        assert isinstance(line["prediction"], str)
        assert line["pages"] >= 1 and line["vision_tokens"] == 64 * line["pages"]  # tiny mode: 64 per page
        assert line["text_tokens"] > 0 and line["seconds"] > 0
    settings = json.loads(out.with_name("pred.jsonl.settings.json").read_text())
    assert settings["generation"]["max_new_tokens"] == 4 and settings["generation"]["batch_size"] == 2


def test_max_new_tokens_bounds_the_generated_tokens(tiny_model_dir, data_file, tmp_path, count_tokens, generated):
    for limit in (2, 7):  # the folder's own limit is 4
        out = tmp_path / f"pred{limit}.jsonl"
        assert main([str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
                     "--max-new-tokens", str(limit)]) == 0
        lines = _read(out)
        assert sorted(len(row) for row in generated) == [limit] * len(lines)
        # generated_tokens re-tokenizes the prediction (what a reader of the file can check)
        assert [line["generated_tokens"] for line in lines] == [count_tokens(line["prediction"]) for line in lines]
        generated.clear()


def test_resume_skips_done_ids_and_drops_a_cut_line(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "pred.jsonl"
    args = [str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
            "--max-new-tokens", "4"]
    assert main(args) == 0
    full = _read(out)
    first_two = "".join(out.read_text().splitlines(keepends=True)[:2])
    out.write_text(first_two + '{"id": "cut-off", "predic')  # as a kill in the middle of a write leaves it
    assert completed_ids(out) == {line["id"] for line in _read(out)}  # cut line gone
    assert main(args) == 0
    # Greedy decoding: the resumed file equals the uninterrupted one, timings aside.
    untimed = [{k: v for k, v in line.items() if k != "seconds"} for line in _read(out)]
    assert untimed == [{k: v for k, v in line.items() if k != "seconds"} for line in full]


def test_other_settings_refuse_to_mix(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "pred.jsonl"
    base = [str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu"]
    assert main(base + ["--max-new-tokens", "4", "--max-samples", "1"]) == 0
    assert main(base + ["--max-new-tokens", "5"]) == 2
    assert main(base + ["--max-new-tokens", "5", "--overwrite", "--max-samples", "1"]) == 0


def test_a_data_file_prepared_again_in_place_is_other_data(tiny_model_dir, data_file, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text(data_file.read_text())
    out = tmp_path / "pred.jsonl"
    base = [str(data), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
            "--max-new-tokens", "2", "--max-samples", "1"]
    assert main(base) == 0
    (tmp_path / "render_config.json").write_text('{"font_size": 14}')  # as prepare leaves it after a new render
    capsys.readouterr()
    assert main(base) == 2
    assert "was generated with data.render None, not" in capsys.readouterr().err


@pytest.mark.slow  # the command in fresh processes
def test_bad_input_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evaluation.generate", str(tmp_path / "absent.jsonl"),
                           "--model", "tiny-random", "--output", str(tmp_path / "p.jsonl")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == f"error: data file not found: {tmp_path / 'absent.jsonl'}\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "x"}\nnot json\n')
    proc = subprocess.run([sys.executable, "-m", "evaluation.generate", str(bad), "--model", "tiny-random",
                           "--output", str(tmp_path / "p.jsonl"), "--num-beams", "0"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "num-beams" in proc.stderr


def test_a_gguf_flag_without_the_llamacpp_engine_names_both_flags(data_file, tmp_path, capsys):
    # The check is the load block's, nested in the command's settings: its keys must still read as flags.
    assert main([str(data_file), "--model", "tiny-random", "--output", str(tmp_path / "p.jsonl"),
                 "--gguf", "model-F16.gguf"]) == 2
    assert capsys.readouterr().err == ("error: argument --gguf names a file for the llamacpp engine, but argument "
                                       "--engine is 'torch'\n")


def test_starts_from_the_model_folders_saved_settings(tiny_model_dir, data_file, tmp_path):
    """Like infer and the API: the folder's generation_settings.json (written by training), flags on top."""
    import shutil

    from config import GenerationSettings, load_run_settings, save_run_settings

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    render, _ = load_run_settings(tiny_model_dir)
    save_run_settings(folder, render, GenerationSettings(max_new_tokens=4, no_repeat_ngram_size=3, batch_size=2))
    out = tmp_path / "pred.jsonl"
    assert main([str(data_file), "--model", str(folder), "--output", str(out), "--max-samples", "1",
                 "--num-beams", "2"]) == 0
    recorded = json.loads(out.with_name("pred.jsonl.settings.json").read_text())["generation"]
    assert (recorded["max_new_tokens"], recorded["no_repeat_ngram_size"], recorded["batch_size"]) == (4, 3, 2)
    assert recorded["num_beams"] == 2  # the flag over the folder's value


def _refusal(capsys, argv):
    """The one line a refused resume prints (status 2, nothing generated)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_the_resolved_precision_is_part_of_the_settings(tiny_model_dir, data_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "pred.jsonl"
    base = [str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
            "--max-samples", "1"]
    assert main(base + ["--dtype", "float32"]) == 0
    # fp16 on a CPU runs in float32 (the precision rule): the same run, so it resumes.
    assert main(base + ["--dtype", "fp16"]) == 0 and "nothing to do" in capsys.readouterr().out
    # auto on a CPU with bf16 units reads pages in bfloat16: another run, refused before the model loads.
    monkeypatch.setattr("model.checkpoint.device.cpu_has_bf16", lambda: True)
    err = _refusal(capsys, base + ["--dtype", "auto"])
    assert f"{out} was generated with encoder_precision float32, not bfloat16; use --overwrite" in err


def test_parts_of_a_killed_run_resume_only_with_their_settings(tiny_model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    base = [str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
            "--dtype", "float32"]
    assert main(base + ["--max-new-tokens", "4", "--max-samples", "2"]) == 0
    # As a killed two-process run leaves its work: parts and settings, no predictions file yet.
    out.rename(tmp_path / "pred.jsonl.part-000-of-002")
    err = _refusal(capsys, base + ["--max-new-tokens", "5"])
    assert "generated with generation.max_new_tokens 4, not 5" in err
    # Lines whose settings were never recorded are not resumed either.
    (tmp_path / "pred.jsonl.settings.json").unlink()
    assert "holds predictions of unknown settings" in _refusal(capsys, base + ["--max-new-tokens", "4"])


def test_a_settings_file_from_before_engine_and_precision_reads_as_torch_default(tiny_model_dir, data_file,
                                                                                 tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    base = [str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
            "--max-samples", "1"]
    assert main(base) == 0
    settings = out.with_name("pred.jsonl.settings.json")
    recorded = json.loads(settings.read_text())
    old = {key: value for key, value in recorded.items()
           if key not in ("engine", "gguf", "precision", "encoder_precision")}
    settings.write_text(json.dumps(old))
    assert main(base) == 0 and "nothing to do" in capsys.readouterr().out
    assert json.loads(settings.read_text()) == recorded  # recorded in full from then on


def test_a_document_unreadable_past_its_first_level_is_skipped_alone(tiny_model_dir, data_file, tmp_path, capsys,
                                                                     monkeypatch):
    """A hierarchical reading can fail at a later level (window summaries still too long); the others of its
    batch are written all the same."""
    from inference.long_documents import LongDocumentError
    from inference.summarizer import DeepSeekSummarizer

    unreadable = json.loads(data_file.read_text().splitlines()[1])
    summarize = DeepSeekSummarizer.summarize_documents

    def failing_on_one(self, documents, settings=None):
        if any(document.text == unreadable["text"] for document in documents):
            raise LongDocumentError("the summaries still did not fit after 4 levels")
        return summarize(self, documents, settings)

    monkeypatch.setattr(DeepSeekSummarizer, "summarize_documents", failing_on_one)
    out = tmp_path / "pred.jsonl"
    assert main([str(data_file), "--model", str(tiny_model_dir), "--output", str(out), "--device", "cpu",
                 "--max-new-tokens", "2", "--batch-size", "3"]) == 0
    ids = [json.loads(line)["id"] for line in data_file.read_text().splitlines()]
    assert [line["id"] for line in _read(out)] == [i for i in ids if i != unreadable["id"]]
    printed = capsys.readouterr()
    assert f"skipped {unreadable['id']}: the summaries still did not fit" in printed.out + printed.err
