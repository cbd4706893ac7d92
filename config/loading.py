"""Typed loading of the configuration dataclasses: JSON in, overrides on top, checked in one place.

Every config object of the project goes through `from_dict`, so an unknown key or a value of the wrong type is
reported the same way everywhere, with the dotted path of the key (``optimizer.learning_rate``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that does not fit its schema; the message names the key."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            (item_type,) = set(typing.get_args(tp)) - {Ellipsis}
            items = [_convert(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, prefix=f"{key}.")
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        # JSON has one number type: 2e-5 and 2 are both valid learning rates, but true is not.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Any or isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"config '{prefix.rstrip('.') or cls.__name__}' must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _convert(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not str(err).startswith(f"config key '{prefix}"):
            raise ConfigError(str(err).replace("config key '", f"config key '{prefix}", 1)) from None
        raise


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


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
    """Return a copy of `obj` with dotted keys (``optimizer.learning_rate``) replaced, checked like JSON keys.

    Values that are None are skipped, so unset CLI flags leave the file's values alone.
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
