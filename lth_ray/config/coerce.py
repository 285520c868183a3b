"""Raw YAML values -> typed specs: each value is checked against its field's type annotation.

Errors name the dotted field and the expected type; unknown fields get a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from lth_ray.config.errors import ConfigError


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def coerce(tp: Any, value: Any, path: str, file: str | None) -> Any:
    """`value` as type `tp`, or a ConfigError naming `path` and the expected type."""
    origin = typing.get_origin(tp)
    expected = type_name(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(file, path, f"expected one of {expected}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, path, file)
            except ConfigError:
                continue
        raise ConfigError(file, path, f"expected {expected}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(file, path, f"expected {expected}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{path}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, path, f"expected {expected}, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): coerce(item, v, f"{path}.{k}", file) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                file, path, f"expected a mapping of {tp.__name__} fields, got {value!r}"
            )
        return build(tp, value, path, file)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, path, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(file, path, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(file, path, f"expected a string, got {value!r}")
        return str(value)
    raise ConfigError(file, path, f"unsupported field type {tp!r}")


def unknown_field(file: str | None, path: str, key: str, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(file, path, f"unknown field{hint}; expected one of: {', '.join(names)}")


def build(cls: type, data: dict[str, Any], prefix: str, file: str | None) -> Any:
    """A `cls` dataclass from a raw mapping; missing fields keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise unknown_field(file, path, str(key), names)
        kwargs[key] = coerce(hints[key], value, path, file)
    return cls(**kwargs)


def field_type(cls: type, path: str) -> Any:
    """The annotation of a dotted field of `cls` ('prune.layer_fractions.conv' -> float), or None."""
    tp: Any = cls
    for part in path.split("."):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return None
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return tp
