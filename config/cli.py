"""Command-line flags generated from the configuration dataclasses, and the one way every command ends.

A setting declared as a field (config/settings.py) becomes a flag of each command that takes its dataclass:
its name with dashes (nested fields prefixed by their group: `--lora-r`), or the spelling in its `flags`
extra; its type, choices and help come from the declaration. Unset flags are None, so a flag overrides the
JSON config or the model folder's saved settings only when given.

Why not `HfArgumentParser` or `jsonargparse`: the first has no nested dataclasses, the second spells nested
keys `--optimizer.learning_rate`; the reference README's flags (`--learning-rate`, `--train`, `--model_path`)
need per-field spellings either way. This module is the small part no library does: read the declaration,
make argparse flags.

Both spellings of a flag work everywhere (`--max-new-tokens` and `--max_new_tokens`); `--help` shows the
command's own. Bad input ends with one `error:` line and exit status 2, whatever the command (`run_command`:
a flag error, or any `config.errors.UserError`), naming a setting by the flag that gave it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable, Iterator, Literal, Optional, TypeVar

from config.errors import USER_ERRORS, first_line
from config.loading import ConfigError, apply_overrides, field_extra, field_type

T = TypeVar("T")

USAGE_ERROR = 2  # exit status of every bad input: flags, config, paths, data
INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) and both `-`/`_` spellings of every long flag."""

    def __init__(self, *args, underscores: bool = False, config_file: Optional[str] = None,
                 secrets: tuple[Optional[str], ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.underscores = underscores  # how this command spells its flags (the reference infer CLI: --model_path)
        self.config_file = config_file  # dest of the JSON config whose keys the flags override (train's --config)
        self.secrets = secrets  # never printed, such as a token typed on the command line

    def error(self, message: str) -> typing.NoReturn:
        self.exit(USAGE_ERROR, self.redact(f"{self.prog}: error: {message}\n"))

    def redact(self, text: str) -> str:
        return redact(text, *self.secrets)

    def flag(self, name: str) -> str:
        """`--some-name` in this command's spelling."""
        return "--" + (name.replace("-", "_") if self.underscores else name.replace("_", "-"))

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        known = {option for action in self._actions for option in action.option_strings}
        return super().parse_known_args([_spelled(arg, known) for arg in args], namespace)


def _spelled(arg: str, known: set[str]) -> str:
    if not arg.startswith("--") or arg == "--":
        return arg
    name, eq, value = arg.partition("=")
    if name not in known:
        for other in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
            if other in known:
                return other + eq + value
    return arg


def _fields(cls: type) -> Iterator[tuple[str, Any, Any]]:
    """(name, plain type, pydantic FieldInfo) of a settings dataclass, in declaration order."""
    for f in dataclasses.fields(cls):
        yield f.name, field_type(cls, f.name), cls.__pydantic_fields__[f.name]


def _default_text(info) -> str:
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    return "" if default is None or default is False else f" (default: {default})"


def _flag_names(parser: Parser, key: str, extra: dict, top: bool) -> list[str]:
    if extra.get("flags"):
        return [parser.flag(f[2:]) for f in extra["flags"]]
    flags = [parser.flag(key.replace(".", "-"))]
    if top and extra.get("public"):
        flags.append(parser.flag(extra["public"]))
    return flags


class _OneSetting(argparse.Action):
    """A setting with several flags (`--max-new-tokens` and the reference README's `--max-length`): given under two
    of them with different values, it is an error rather than "the last one wins"."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_flag_given", {})
        earlier = given.get(self.dest)
        if earlier and earlier[0] != option_string and earlier[1] != values:
            parser.error(f"{earlier[0]} {earlier[1]} and {option_string} {values} name one setting; give one of them")
        given[self.dest] = (option_string, values)
        setattr(namespace, self.dest, values)


def add_settings_arguments(parser: Parser, cls: type, group=None, prefix: str = "", top: bool = True,
                           flag_prefix: str = "") -> None:
    """Flags for every field of `cls` (recursively), with dotted config keys as destinations.

    A nested block is a group of flags prefixed by its name (`--lora-r`), or not (`flatten` in its extra).
    A field marked `positional` is a positional argument; a field without a default is a required flag.
    """
    target = group or parser
    for name, inner, info in _fields(cls):
        key, extra = prefix + name, field_extra(cls, name)
        if dataclasses.is_dataclass(inner):
            sub = parser.add_argument_group(extra.get("group") or f"{name} settings")
            add_settings_arguments(parser, inner, sub, f"{key}.", top=extra.get("flatten", False),
                                   flag_prefix="" if extra.get("flatten") else f"{flag_prefix}{name}.")
            continue
        kwargs: dict[str, Any] = {"help": (info.description or "") + _default_text(info)}
        if typing.get_origin(inner) is Literal:
            kwargs.update(choices=list(typing.get_args(inner)))
        elif inner is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif typing.get_origin(inner) is list:
            kwargs.update(nargs="+", type=typing.get_args(inner)[0], metavar="NAME")
        else:
            kwargs.update(type=inner, metavar=extra.get("metavar") or {int: "N", float: "X"}.get(inner, "VALUE"))
        if extra.get("positional"):
            kwargs.pop("metavar", None)
            target.add_argument(key, nargs=None if info.is_required() else "?", metavar=name.upper(), **kwargs)
            continue
        flags = _flag_names(parser, flag_prefix + name, extra, top)
        if len(flags) > 1 and "action" not in kwargs:
            kwargs["action"] = _OneSetting
        target.add_argument(*flags, dest=key, default=None, required=info.is_required(), **kwargs)
        for switch, value in extra.get("switches", {}).items():
            target.add_argument(parser.flag(switch[2:]), dest=key, action="store_const", const=value,
                                help=f"same as {flags[0]} {value}")


def to_argv(obj: Any, underscores: bool = False, _prefix: str = "", _top: bool = True,
            _explicit: bool = False) -> list[str]:
    """The flags that give `obj` to a command built by `add_settings_arguments`: the inverse of the flag builder.

    Values equal to their declared default are left out, except in blocks marked `explicit` (whose command-line
    defaults come from elsewhere, such as a model folder's saved generation settings), where every value is given.
    """
    cls = type(obj)

    def spell(name: str) -> str:
        return "--" + (name.replace("-", "_") if underscores else name.replace("_", "-"))

    argv: list[str] = []
    positionals: list[str] = []
    for name, inner, info in _fields(cls):
        value, extra = getattr(obj, name), field_extra(cls, name)
        if dataclasses.is_dataclass(inner):
            argv += to_argv(value, underscores, "" if extra.get("flatten") else f"{_prefix}{name}-",
                            extra.get("flatten", False), _explicit or extra.get("explicit", False))
            continue
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if value is None or (value == default and not _explicit and not extra.get("positional")):
            continue
        if extra.get("positional"):
            positionals.append(str(value))
            continue
        flag = extra["flags"][0][2:] if extra.get("flags") else f"{_prefix}{name}".replace(".", "-")
        if inner is bool:
            argv.append(spell(flag if value else f"no-{flag}"))
        elif isinstance(value, list):
            argv += [spell(flag), *map(str, value)]
        else:
            argv += [spell(flag), str(value)]
    return positionals + argv


def settings_overrides(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of the settings flags that were given (for `apply_overrides`)."""
    values = {}
    for name, inner, _ in _fields(cls):
        if dataclasses.is_dataclass(inner):
            values.update(settings_overrides(args, inner, f"{prefix}{name}."))
        elif getattr(args, prefix + name, None) is not None:
            values[prefix + name] = getattr(args, prefix + name)
    return values


def settings_from_args(parser: Parser, cls: type[T], args: argparse.Namespace, base: Optional[T] = None,
                       **blocks: Any) -> T:
    """`cls` built from the parsed flags over `base` (default: the declared defaults); `blocks` give base values
    of nested blocks (a model folder's saved generation settings) that the flags then override."""
    if base is None:
        data = {name: getattr(args, name) for name, _, info in _fields(cls)
                if info.is_required() and getattr(args, name, None) is not None}
        try:
            base = cls(**data, **blocks)
        except ConfigError as err:
            raise ConfigError(_flag_message(parser, str(err), args)) from None
    return apply_flags(parser, base, args)


def apply_flags(parser: argparse.ArgumentParser, base: T, args: argparse.Namespace) -> T:
    """`base` (a config file's values, a model folder's saved settings) with the given flags on top; a bad value
    is reported under the flag's name."""
    try:
        return apply_overrides(base, settings_overrides(args, type(base)))
    except ConfigError as err:
        raise ConfigError(_flag_message(parser, str(err), args)) from None


def _flag_message(parser: argparse.ArgumentParser, message: str, args: argparse.Namespace) -> str:
    """`message` with each "config key 'x'" that a flag of this command sets named as that flag: always, unless the
    command read a config file (`Parser.config_file`), which may have set the key; then only the flags given."""
    from_file = getattr(args, getattr(parser, "config_file", None) or "", None) is not None
    for action in parser._actions:
        if action.option_strings and (not from_file or getattr(args, action.dest, None) is not None):
            message = message.replace(f"config key '{action.dest}'", "argument " + "/".join(action.option_strings))
    return message


def redact(text: str, *secrets: Optional[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def error_message(parser: Parser, args: argparse.Namespace, err: BaseException) -> str:
    """How a command reports a user error: `error: ` and its first line, settings named as the command line
    gave them, secrets hidden."""
    return parser.redact(f"error: {_flag_message(parser, first_line(err), args)}")


def run_command(parser: Parser, run: Callable[[argparse.Namespace], Optional[int]], argv=None) -> int:
    """Parse, run, and end every user error (config.errors.USER_ERRORS) with one `error:` line and exit status 2.

    Anything else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    try:
        return run(args) or 0
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted; re-running the same command resumes where that is possible",
              file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as err:
        print(error_message(parser, args, err), file=sys.stderr)
        return USAGE_ERROR
