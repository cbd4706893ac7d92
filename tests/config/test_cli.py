"""Flags come from the configuration's declaration: every field has one, with the field's help and bounds."""
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import Field

from config import GenerationSettings, LoadSettings, RenderConfig, TrainingConfig
from config.cli import Parser, add_settings_arguments, apply_flags, settings_from_args, settings_overrides, to_argv
from config.jobs import EvaluateJob, GenerateJob, PrepareJob
from config.loading import ConfigError, Int, field_type, settings

REPO = Path(__file__).resolve().parents[2]


@settings
class Inner:
    depth: Int = Field(2, ge=1, description="how deep")


@settings
class Example:
    """A setting added to a dataclass is a flag of every command that takes it, with no other edit."""

    batch_size: Int = Field(4, ge=1, description="items per batch")
    colour: Literal["red", "blue"] = Field("red", description="which colour")
    limit: Optional[Int] = Field(None, ge=1, description="optional cap")
    verbose: bool = Field(False, description="say more")
    inner: Inner = dataclasses.field(default_factory=Inner)


def _parser(underscores: bool = False) -> Parser:
    parser = Parser(prog="example", underscores=underscores)
    add_settings_arguments(parser, Example)
    return parser


def test_every_field_becomes_a_flag_with_its_help():
    help_text = _parser().format_help()
    for flag, text in [("--batch-size", "items per batch"), ("--colour", "which colour"), ("--limit", "optional cap"),
                       ("--verbose", "say more"), ("--inner-depth", "how deep")]:
        assert flag in help_text and text in help_text
    args = _parser().parse_args(["--batch-size", "8", "--colour", "blue", "--verbose", "--inner-depth", "5"])
    assert settings_overrides(args, Example) == {"batch_size": 8, "colour": "blue", "verbose": True,
                                                 "inner.depth": 5}
    assert apply_flags(_parser(), Example(), args) == Example(8, "blue", None, True, Inner(5))


def test_unset_flags_keep_the_base_values():
    base = Example(batch_size=16, inner=Inner(3))
    assert apply_flags(_parser(), base, _parser().parse_args([])) == base


def test_both_spellings_and_errors_name_the_flag():
    parser = _parser(underscores=True)
    assert "--batch_size" in parser.format_help()
    args = parser.parse_args(["--batch-size", "0"])  # the other spelling still works
    with pytest.raises(ConfigError, match="argument --batch_size: input should be greater than or equal to 1"):
        apply_flags(parser, Example(), args)


def test_bad_choice_is_a_one_line_usage_error():
    proc = subprocess.run([sys.executable, "-m", "evaluation.generate", "x.jsonl", "--model", "tiny-random",
                           "--output", "p.jsonl", "--num-beams", "many"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--num-beams" in proc.stderr


def _leaves(kind, prefix=""):
    for f in dataclasses.fields(kind):
        inner = field_type(kind, f.name)
        if dataclasses.is_dataclass(inner):
            yield from _leaves(inner, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


COMMANDS = [("training.train", TrainingConfig), ("inference.generate", GenerateJob),
            ("inference.infer", GenerationSettings), ("data.prepare_datasets", PrepareJob),
            ("evaluation.evaluate", EvaluateJob)]


@pytest.mark.parametrize("module, cls", COMMANDS)
def test_commands_have_a_flag_for_every_setting(module, cls):
    """Each command exposes every field of its settings (help from the field)."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    dests = {action.dest for action in parser._actions}
    missing = [key for key in _leaves(cls) if key not in dests]
    assert not missing, missing


def _non_default(cls, data_file="d.jsonl"):
    """An instance of `cls` whose every field differs from its default (so no flag can be left out)."""
    values = {"data_file": data_file, "model": "m", "output": "o.jsonl", "references": "r.jsonl",
              "predictions": "p.jsonl", "overwrite": True, "max_samples": 3, "render_text": True,
              "baseline": "lead-3", "per_example": "e.jsonl", "plot": "x.png", "workers": 2, "bootstrap": 7,
              "precision_recall": True, "seed": 5, "source": "s.jsonl", "subset": "v1", "output_dir": "out",
              "text_field": "a", "summary_field": "b", "generate_images": True}
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@pytest.mark.parametrize("module, cls", [c for c in COMMANDS if c[1] in (GenerateJob, PrepareJob, EvaluateJob)])
def test_to_argv_is_the_inverse_of_the_flags(module, cls):
    """settings -> to_argv -> the command's own parser -> the same settings, also for nested blocks."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    job = _non_default(cls)
    if cls is GenerateJob:
        job = dataclasses.replace(job, load=LoadSettings(device="cpu", experts_implementation="eager"),
                                  generation=GenerationSettings(max_new_tokens=9, num_beams=2, compile=True))
    if cls is PrepareJob:
        job = dataclasses.replace(job, render=RenderConfig(mode="tiny", font_size=10, max_pages=2))
    argv = to_argv(job)
    assert settings_from_args(parser, cls, parser.parse_args(argv)) == job
    if cls is GenerateJob:  # the model folder's saved settings are no default for a stated command
        assert "--max-new-tokens" in argv and "--temperature" in argv and "--no-compile" not in argv


def test_one_setting_under_two_of_its_flags_with_different_values_is_an_error(capsys):
    from config import GenerationSettings
    from config.cli import Parser, add_settings_arguments

    parser = Parser(prog="cmd")
    add_settings_arguments(parser, GenerationSettings)
    assert parser.parse_args(["--max_new_tokens", "3", "--max_length", "3"]).max_new_tokens == 3
    assert parser.parse_args(["--max-length", "3", "--max-length", "5"]).max_new_tokens == 5  # one flag: last wins
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--max_new_tokens", "3", "--max_length", "5"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "cmd: error: --max-new-tokens 3 and --max-length 5 name one setting; give one of them"
