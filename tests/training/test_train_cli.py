"""The train CLI: every README flag, config file + overrides, a real tiny run and its outputs, one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config import ConfigError, TrainingConfig
from tests.training.conftest import REPO, TINY_BART, base_args, run_cli
from training.train import build_parser, main, resolve_config, resolve_task, train

README_COMMANDS = [
    "--use-deepseek-ocr --train prepared_data/train.jsonl --val prepared_data/val.jsonl "
    "--model-name deepseek-ai/DeepSeek-OCR --output ./deepseek-summarizer",
    "--train prepared_data/train.jsonl --val prepared_data/val.jsonl --model-name facebook/bart-base "
    "--output ./baseline-summarizer",
    "--config config.json --use-deepseek-ocr",
    "--use-deepseek-ocr --train prepared_data/train.jsonl --push-to-hub --hub-model-id username/deepseek-summarizer "
    "--hub-token YOUR_TOKEN",
    "--use-deepseek-ocr --hf-dataset username/prepared-cnn-dailymail --hf-train-split train",
    "--use-deepseek-ocr --batch-size 2",
    "--use-deepseek-ocr --train data.jsonl",
]
EXTRA = ("--resume --overwrite --max-steps 5 --eval-steps 2 --seed 3 --lora --train-projector --report-to none "
         "--dry-run --num-epochs 2 --learning-rate 1e-4 --gradient-accumulation-steps 4 --mode tiny "
         "--max-train-samples 10 --max-eval-samples 3 --vision-cache disk --hf-val-split validation "
         "--experts-implementation batched_mm --device cpu --dtype bf16 --attn-implementation eager")


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_commands_parse(command):
    """Each README command parses, and what it names lands in the resolved config."""
    cfg = resolve_config(build_parser().parse_args(command.replace("--config config.json", "").split()))
    words = command.split()
    named = {"--output": "output_dir", "--model-name": "model_name", "--train": "train_file", "--val": "val_file",
             "--hf-dataset": "hf_dataset", "--hf-train-split": "hf_train_split", "--hub-model-id": "hub_model_id"}
    for flag, key in named.items():
        if flag in words:
            assert getattr(cfg, key) == words[words.index(flag) + 1]
    # The seed's --use-deepseek-ocr names the task; without it, train() decides it from the model (below).
    assert cfg.task == ("deepseek-ocr" if "--use-deepseek-ocr" in words else None)
    assert cfg.push_to_hub == ("--push-to-hub" in words)
    if "--batch-size" in words:
        assert cfg.batch_size == int(words[words.index("--batch-size") + 1])


def test_task_follows_the_model_unless_named():
    assert resolve_task(TrainingConfig(model_name="tiny-random")).task == "deepseek-ocr"
    assert resolve_task(TrainingConfig(model_name=TINY_BART)).task == "seq2seq"
    with pytest.raises(ConfigError, match="is not a DeepSeek-OCR model"):
        resolve_task(TrainingConfig(model_name=TINY_BART, task="deepseek-ocr"))


def test_every_flag_overrides_the_config_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_name": "x/y", "batch_size": 8, "optimizer": {"warmup_steps": 7},
                                  "render": {"mode": "base"}}))
    args = build_parser().parse_args(["--config", str(config), "--resume", "checkpoint-4", *EXTRA.split()[1:]])
    cfg = resolve_config(args)
    assert args.resume == "checkpoint-4" and args.overwrite and args.dry_run
    assert (cfg.model_name, cfg.batch_size, cfg.optimizer.warmup_steps) == ("x/y", 8, 7)  # file values kept
    assert (cfg.max_steps, cfg.eval_steps, cfg.seed, cfg.num_epochs, cfg.gradient_accumulation_steps) == (5, 2, 3, 2, 4)
    assert cfg.lora.enabled and cfg.train_projector and cfg.report_to == "none" and cfg.vision_cache == "disk"
    assert (cfg.load.experts_implementation, cfg.load.device, cfg.load.dtype, cfg.load.attn_implementation) == \
        ("batched_mm", "cpu", "bf16", "eager")
    assert (cfg.optimizer.learning_rate, cfg.render.mode, cfg.max_train_samples, cfg.max_eval_samples) == \
        (1e-4, "tiny", 10, 3)
    assert build_parser().parse_args(["--resume"]).resume == "latest"
    help_text = build_parser().format_help()
    for group in ("run:", "optimizer settings:", "lora settings:", "render settings:", "generation settings:",
                  "load settings:"):
        assert group in help_text


@pytest.mark.slow  # training in fresh processes
def test_tiny_run_writes_a_loadable_folder_and_never_the_token(tmp_path, prepared, tiny_config):
    out = tmp_path / "run"
    secret = "hf_SECRETtoken123"
    result = run_cli(base_args(prepared, TINY_BART, tiny_config, out, "--val", str(prepared / "val.jsonl"),
                               "--hub-token", secret))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples/s" in result.stderr and "tokens/s" in result.stderr
    for name in ("model.safetensors", "generation_settings.json", "render_config.json", "training_config.json",
                 "README.md", "loss_curves.png", "checkpoint-2/trainer_state.json", "checkpoint-6/model.safetensors"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["max_steps"] == 6 and saved["max_length"] == 24 and "hub_token" not in json.dumps(saved)
    card = (out / "README.md").read_text()
    assert "eval_rouge1" in card and "How to load" in card
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stdout + result.stderr

    # The same folder again: refused without --overwrite/--resume.
    again = run_cli(base_args(prepared, TINY_BART, tiny_config, out))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith("error: output folder")


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing", "data file not found"),
    ("empty", "data file is empty"),
    ("no_summary", "record has no 'summary'"),
    ("unknown_model", "model 'no-such-user/no-such-model' is not available offline"),
    ("unknown_key", "unknown config key 'optimizer.learning_rat'"),
    ("batch_zero", "argument --batch-size: input should be greater than or equal to 1, got 0"),
    ("deepseek_model_as_seq2seq", "is a DeepSeek-OCR model: it trains with task deepseek-ocr"),
    ("deepseek_hub_offline", "'deepseek-ai/DeepSeek-OCR' is not available offline"),
    ("missing_model_folder", "model folder not found"),
    # Offline, the hub step fails; the error names it (not the model, which is fine).
    ("push_offline", "creating the hub repository 'someone/summarizer' failed"),
    # Checked once the task is known, after the flags are applied: still named by the flag that gave it.
    ("export_into_output", "argument --export must be another folder than the output folder"),
])
def test_bad_input_is_one_line(case, expected, tmp_path, prepared, tiny_config, capsys):
    train = str(prepared / "train.jsonl")
    argv = ["--train", train, "--model-name", TINY_BART, "--output", str(tmp_path / "o"), "--report-to", "none"]
    if case == "missing":
        argv[1] = str(tmp_path / "nope.jsonl")
    elif case == "empty":
        argv[1] = str(_write(tmp_path / "empty.jsonl", []))
    elif case == "no_summary":
        argv[1] = str(_write(tmp_path / "bad.jsonl", [{"id": "a", "text": "some text"}]))
    elif case == "unknown_model":
        argv[3] = "no-such-user/no-such-model"
    elif case == "unknown_key":
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"optimizer": {"learning_rat": 1e-3}}))
        argv += ["--config", str(config)]
    elif case == "batch_zero":
        argv += ["--batch-size", "0"]
    elif case == "deepseek_model_as_seq2seq":
        argv = argv[:2] + argv[4:] + ["--task", "seq2seq", "--model-name", "tiny-random"]
    elif case == "deepseek_hub_offline":  # the README's first train command, offline (as CI runs)
        argv = argv[:2] + argv[4:] + ["--use-deepseek-ocr", "--model-name", "deepseek-ai/DeepSeek-OCR"]
    elif case == "missing_model_folder":
        argv[3] = str(tmp_path / "no-such-folder")
    elif case == "push_offline":
        argv[3] = "tiny-random"
        argv += ["--push-to-hub", "--hub-model-id", "someone/summarizer", "--hub-token", "hf_secret_value"]
    elif case == "export_into_output":
        argv[3] = "tiny-random"
        argv += ["--export", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    if case == "deepseek_hub_offline":
        assert "tiny-random" in err[0]
    assert "hf_secret_value" not in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # the command in fresh processes
def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path):
    result = run_cli(["--train", str(tmp_path / "missing.jsonl"), "--model-name", TINY_BART])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: data file not found: {tmp_path / 'missing.jsonl'}"
    result = run_cli(["--batch-size", "zero"])
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_dry_run_writes_nothing(tmp_path, prepared, tiny_config, capsys):
    out = tmp_path / "dry"
    assert main(base_args(prepared, TINY_BART, tiny_config, out, "--dry-run")) == 0
    assert "configuration ok: 8 training" in capsys.readouterr().out and not out.exists()


def test_overwrite_drops_old_checkpoints(tmp_path):
    from training.run_outputs import OutputDirError, prepare_output_dir

    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(OutputDirError):
        prepare_output_dir(tmp_path, overwrite=False, resume=None)
    prepare_output_dir(tmp_path, overwrite=False, resume="latest")
    prepare_output_dir(tmp_path, overwrite=True, resume=None)
    assert not (tmp_path / "checkpoint-3").exists()


@pytest.mark.slow  # training in fresh processes
def test_the_seeds_config_command_trains_on_the_prepared_data(tmp_path, prepared):
    """`python -m training.train --config config.json --use-deepseek-ocr` with the README's JSON (no data key) in
    a folder where data.prepare_datasets wrote its default outputs."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    config = readme.split("### Configuration file", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    assert "train_file" not in json.loads(config)
    (tmp_path / "config.json").write_text(config)
    argv = ["--config", "config.json", "--use-deepseek-ocr", "--model-name", "tiny-random", "--dry-run"]
    missing = run_cli(argv, cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "--train FILE" in missing.stderr and "--hf-dataset ID" in missing.stderr

    shutil.copytree(prepared, tmp_path / "prepared_data")
    found = run_cli(argv, cwd=tmp_path)
    assert found.returncode == 0, found.stderr[-2000:]
    assert "training on prepared_data/train.jsonl, validating on prepared_data/val.jsonl" in found.stdout
    assert "configuration ok: 8 training and 8 validation records, output ./models/experiment-1" in found.stdout


@pytest.mark.parametrize("model", ["tiny-random", TINY_BART])
def test_train_returns_what_the_run_did(tmp_path, prepared, model):
    cfg = resolve_config(build_parser().parse_args([
        "--model-name", model, "--mode", "tiny", "--train", str(prepared / "train.jsonl"), "--val",
        str(prepared / "val.jsonl"), "--output", str(tmp_path / "run"), "--max-steps", "4", "--eval-steps", "2",
        "--batch-size", "2", "--gradient-accumulation-steps", "1", "--max-length", "8", "--report-to", "none",
        "--no-gradient-checkpointing", "--max-eval-samples", "2", "--generation-max-new-tokens", "4", "--max-source-length", "96",
        "--device", "cpu"]))
    result = train(cfg)
    assert result.output_dir == str(tmp_path / "run") and result.steps == 4
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert result.val_losses == [(h["step"], h["eval_loss"]) for h in state["log_history"] if "eval_loss" in h]
    assert [step for step, _ in result.val_losses] == [2, 4]
    assert result.metrics["eval_loss"] == result.val_losses[-1][1]
    assert result.step_seconds == pytest.approx(result.train_seconds / 4) and result.train_seconds > 0
    if model == "tiny-random":  # every bundled summary is longer than 8 tokens
        assert result.truncated_targets == 4 * 2 and result.truncated_sources == 0
    else:
        assert result.truncated_targets is None and result.truncated_sources is None
