"""How a configuration dataclass is declared, loaded from JSON, overridden and saved.

Each setting is declared once, as a field of a `settings` dataclass: its type, default, bounds and help text
(`Field(default, ge=..., description=...)`). pydantic validates it wherever the object is built (a JSON file,
flags, an API request, `dataclasses.replace`), and the same declaration produces the command-line flags
(config/cli.py) and the API's JSON schema (inference/openapi.py). Errors become one `ConfigError` line naming
the dotted key (``optimizer.learning_rate``).

Why pydantic dataclasses: they stay plain dataclasses (`fields`, `asdict`, `replace` all work, the defaults read
top to bottom like nanoGPT's config), while pydantic brings nested validation, JSON schema and precise errors
that a hand-written loader had to reimplement. Types are strict (JSON "4" is not an integer, true is not a number).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError

from config.errors import UserError

T = TypeVar("T")

# Strict scalars: no silent "4" -> 4 or true -> 1.0; an int is still a valid float (JSON has one number type).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


class ConfigError(UserError, ValueError):
    """A configuration value that does not fit its schema; the message names the key."""


def settings(cls: type[T]) -> type[T]:
    """Declare a configuration dataclass: validated on construction (also by `dataclasses.replace`), unknown keys
    rejected, every failure a ConfigError."""
    cls = pydantic.dataclasses.dataclass(config=ConfigDict(extra="forbid"))(cls)
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self, *args, **kwargs) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as err:
            raise ConfigError(error_line(err)) from None

    cls.__init__ = __init__
    return cls


def error_line(err: ValidationError, prefix: str = "") -> str:
    """The first problem of a validation error as one line naming the dotted key and the value given."""
    first = err.errors(include_url=False)[0]
    key = prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"]
    if first["type"] == "value_error":  # a __post_init__ check's: its message names the key
        return _under(key.rstrip("."), message.removeprefix("Value error, "))
    if first["type"] == "unexpected_keyword_argument":
        return f"unknown config key '{key}'"
    return f"config key '{key}': {message[0].lower()}{message[1:]}, got {first['input']!r}"


def _under(block: str, message: str) -> str:
    """A nested block's check names keys relative to the block (`'gguf'` of LoadSettings): named from the top
    (`'load.gguf'`), they match the flag or environment variable that gave them."""
    return message.replace("config key '", f"config key '{block}.") if block else message


def field_extra(cls: type, name: str) -> dict:
    """The `json_schema_extra` of a settings field: its command-line spelling (`flags`), public name..."""
    extra = cls.__pydantic_fields__[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def field_type(cls: type, name: str) -> type:
    """The plain Python type of field `name` (int for `Optional[Int]`), e.g. to parse text such as form fields."""
    tp = typing.get_type_hints(cls)[name]
    options = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    return options[0]


# The spellings of a bool given as text; any case.
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_text(cls: type, name: str, text: str, label: str) -> Any:
    """Text (a multipart form field, an environment variable) as the type field `name` of `cls` is declared with,
    for the declaration's own validation (bounds, checks) to judge next: a bool from TRUE_WORDS / FALSE_WORDS (never
    Python's `bool("false")`, which is True), a Literal's choice, an int, a float; empty text is None for an
    Optional field; other types keep the text. Anything else is a ConfigError, one line that starts with `label`,
    the caller's name for the field ("form field 'num_beams'", "environment variable PORT")."""
    kind, word = field_type(cls, name), text.strip()
    if not word and type(None) in typing.get_args(typing.get_type_hints(cls)[name]):  # Optional
        return None
    if kind is bool:
        if word.lower() in TRUE_WORDS + FALSE_WORDS:
            return word.lower() in TRUE_WORDS
        expected = "true or false (or " + ", ".join(f"{t}/{f}" for t, f in zip(TRUE_WORDS[1:], FALSE_WORDS[1:])) + ")"
    elif typing.get_origin(kind) is typing.Literal:
        choices = {str(choice): choice for choice in typing.get_args(kind)}
        if word in choices:
            return choices[word]
        expected = "one of " + ", ".join(choices)
    elif kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
    else:
        return text
    raise ConfigError(f"{label} must be {expected}, got {text[:40]!r}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from plain data (a parsed JSON object), rejecting unknown keys and bad values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config '{prefix.rstrip('.') or cls.__name__}' must be an object, got {data!r}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        raise ConfigError(error_line(err, prefix)) from None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flat_items(tree: dict[str, Any], prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested settings dict, e.g. ("optimizer.learning_rate", 2e-05)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def load_json(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON config file into `cls`; a missing or malformed file is a ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    return from_dict(cls, data)


def apply_overrides(obj: T, overrides: dict[str, Any]) -> T:
    """A copy of `obj` with dotted keys (``optimizer.learning_rate``) replaced, checked like JSON keys.

    Values that are None are skipped, so unset flags leave the file's values alone.
    """
    data = to_dict(obj)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key '{dotted}'")
            node = node[part]
        node[leaf] = value
    return from_dict(type(obj), data)


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write a config next to the artefacts it produced, atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
