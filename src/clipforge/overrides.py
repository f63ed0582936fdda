"""Typed configs from layers: dataclass defaults -> YAML file -> `key.sub=value` overrides.

Works on any nested frozen dataclass. Values are parsed as YAML scalars (`lr=1e-3`, `flag=true`, `x=null`,
`betas=[0.9,0.98]`) and checked against the field's type hint; an unknown key or a bad value raises
ConfigError naming the source (file or command line), the dotted key, and what would be valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that does not fit the dataclass; the message says where and what is valid."""


def load_config(
    cls: type[T], yaml_path: str | Path | None = None, overrides: Iterable[str] = (), base: T | None = None
) -> T:
    """`base` (default: cls()) updated by the YAML mapping in `yaml_path`, then by each `key=value`."""
    config = base if base is not None else cls()
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if data is not None:
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
            config = apply_mapping(config, data, source=str(path))
    for text in overrides:
        key, value = parse_override(text)
        config = apply_mapping(config, _nest(key, value), source=f"override {text!r}")
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=1e-3' -> ('optim.lr', 0.001): the value is a YAML scalar or flow list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_mapping(config: T, data: Mapping[str, Any], source: str = "config", prefix: str = "") -> T:
    """A copy of dataclass instance `config` with the (nested) mapping's values checked and set."""
    hints = typing.get_type_hints(type(config))
    valid = [f.name for f in dataclasses.fields(config)]
    changes = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in valid:
            where = f"under {prefix[:-1]!r}" if prefix else "at top level"
            raise ConfigError(f"{source}: unknown key {dotted!r}; valid keys {where}: {', '.join(valid)}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = apply_mapping(current, value, source, f"{dotted}.")
        else:
            changes[key] = coerce(value, hints[key], dotted, source)
    return dataclasses.replace(config, **changes)


def coerce(value: Any, hint: Any, key: str, source: str = "config") -> Any:
    """`value` converted to type `hint` (bool, int, float, str, Literal, Optional, tuple, list, dataclass)."""
    try:
        return _coerce(value, hint)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: bad value {value!r} for {key!r}: {error}") from None


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list like [a, b], got {type(value).__name__}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if origin is tuple and args:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        return origin(_coerce(v, args[0]) if args else v for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ValueError("expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError("expected a string")
        return str(value)
    if hint is type(None):
        if value is not None:
            raise ValueError("expected null")
        return None
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of {hint.__name__} fields")
        return apply_mapping(hint(), value)
    raise TypeError(f"unsupported type {hint!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (tuples kept): what gets saved with checkpoints and printed."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "saved config") -> T:
    return apply_mapping(cls(), data, source)


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out
