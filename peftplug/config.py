"""Typed method configurations: strict parsing from dicts/JSON, with clear errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, Union

from peftplug.errors import ConfigError, did_you_mean


@dataclasses.dataclass
class MethodConfig:
    """Base of every method's configuration: a dataclass that parses strictly.

    Subclasses add typed fields with defaults and may validate in `validate()`.
    """

    method: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build a config, rejecting unknown keys and values of the wrong type."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{cls._label()} config must be a mapping of option names to values, "
                f"got {type(values).__name__}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown {cls._label()} option {key!r}{did_you_mean(key, fields)}; "
                    f"valid options: {', '.join(sorted(fields))}"
                )
            parsed[key] = _coerce(value, hints[key], f"{cls._label()} option {key!r}")
        config = cls(**parsed)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready options (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def validate(self) -> None:
        """Check relations between options; raise ConfigError naming the fix."""

    @classmethod
    def _label(cls) -> str:
        return repr(cls.method) if cls.method else cls.__name__


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` checked against `annotation` (int accepted for float, list for tuple)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_describe(annotation)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value in allowed:
            return value
        raise ConfigError(
            f"{where} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
            f"{did_you_mean(str(value), [str(a) for a in allowed])}"
        )
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be None, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be {_describe(annotation)}, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type, where) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{where} must be {_describe(annotation)}, got {value!r}")


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return f"a list of {_describe(item)}"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))
