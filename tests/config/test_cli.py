"""Flags come from the configuration's declaration: every field has one, with the field's help and bounds."""
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import Field

from config import GenerationSettings, TrainingConfig
from config.cli import Parser, add_settings_arguments, apply_flags, settings_overrides
from config.loading import ConfigError, Int, settings

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


@pytest.mark.parametrize("module, cls", [("training.train", TrainingConfig),
                                         ("evaluation.generate", GenerationSettings),
                                         ("inference.infer", GenerationSettings)])
def test_commands_have_a_flag_for_every_setting(module, cls):
    """The train, generate and infer commands expose every field of their configuration (help from the field)."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    dests = {action.dest for action in parser._actions}

    def leaves(kind, prefix=""):
        for f in dataclasses.fields(kind):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                yield from leaves(f.default_factory, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    missing = [key for key in leaves(cls) if key not in dests]
    assert not missing, missing
