"""One kind of user error: every error class meant for the user derives from UserError, and every command ends one
the same way (one `error:` line, exit status 2, the setting named by the flag that gave it); a bug keeps its
traceback."""
import ast
import builtins
import tomllib
from pathlib import Path

import pytest

from config import ConfigError, UserError
from config.cli import USAGE_ERROR, Parser, run_command

REPO = Path(__file__).resolve().parents[2]
# Exceptions that never reach a user as an error line: each is caught inside the project and answered otherwise.
INTERNAL = {
    "NonFiniteStep": "training/faults.py turns it into TrainingStopped",
    "RequestExpired": "the API server answers it with 504",
    "ClientGone": "the API server answers it with 499, logged only",
    "ApiError": "the API server's HTTP answer (a status and a message), not a command's error",
    "ContextExceeded": "a prompt past the context reaching a model: a bug of the long-document planning",
}


def _base_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _project_classes() -> dict[str, set[str]]:
    """{class name: names of its bases} of every class in the project's packages (those the layer contract lists),
    read from the source, so no module (torch, llama.cpp) needs importing."""
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    classes: dict[str, set[str]] = {}
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    classes.setdefault(node.name, set()).update(filter(None, map(_base_name, node.bases)))
    return classes


def _derives(name: str, target: str, classes: dict[str, set[str]]) -> bool:
    if name == target:
        return True
    return any(_derives(base, target, classes) for base in classes.get(name, ()) if base != name)


def _is_exception(name: str, classes: dict[str, set[str]]) -> bool:
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return True
    return any(_is_exception(base, classes) for base in classes.get(name, ()) if base != name)


def test_every_error_class_meant_for_the_user_derives_from_user_error():
    classes = _project_classes()
    errors = {name for name in classes if name != "UserError" and _is_exception(name, classes)}
    assert {"ConfigError", "ExportError", "GgufError", "StageFailed"} <= errors  # the walk does find them
    assert set(INTERNAL) <= errors, "an exception listed as internal is gone: drop it from INTERNAL"
    outside = sorted(name for name in errors - set(INTERNAL) if not _derives(name, "UserError", classes))
    assert not outside, f"derive these from config.errors.UserError (or list them in INTERNAL): {outside}"


class Refused(UserError):
    """A user error of some command."""


def _failing(err: BaseException):
    def run(args):
        raise err

    return run


def test_run_command_ends_a_user_error_with_one_line_and_a_bug_with_its_traceback(capsys):
    assert run_command(Parser(prog="cmd"), _failing(Refused("the file is empty\n  details below")), []) == USAGE_ERROR
    assert capsys.readouterr().err == "error: the file is empty\n"
    with pytest.raises(ValueError, match="a bug"):  # a ValueError is not a user error: its traceback stays
        run_command(Parser(prog="cmd"), _failing(ValueError("a bug")), [])


@pytest.mark.parametrize("argv, named", [
    (["--max-steps", "0"], "argument --max-steps"),  # given as a flag
    ([], "argument --max-steps"),  # no config file: only the flag (or its default) can have set it
    (["--config", "run.json"], "config key 'max_steps'"),  # the file may have set it
])
def test_an_error_names_the_setting_as_the_user_gave_it(capsys, argv, named):
    parser = Parser(prog="cmd", config_file="config")
    parser.add_argument("--config")
    parser.add_argument("--max-steps", dest="max_steps", type=int)
    error = ConfigError("config key 'max_steps' must be positive")
    assert run_command(parser, _failing(error), argv) == USAGE_ERROR
    assert capsys.readouterr().err == f"error: {named} must be positive\n"
