"""Frozen dataclass configs for components, built from ``KEY=VALUE`` options.

Every component declares a frozen dataclass ``Config``; unknown keys and values of the wrong
type are rejected with a message that lists what is valid.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from prunetune.errors import UsageError

__all__ = ["EmptyConfig", "build_config", "convert_value", "parse_options"]

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class EmptyConfig:
    """Config of a component that takes no options."""


def parse_options(pairs: Sequence[str], what: str) -> dict[str, str]:
    """Split ``["a=1", "b=x"]`` into ``{"a": "1", "b": "x"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} option {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def convert_value(value: Any, annotation: Any, where: str) -> Any:
    """Convert a command-line string to ``annotation`` (bool, int, float, str, tuples, optionals)."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        non_none = [a for a in args if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        return convert_value(value, non_none[0], where)
    if origin in (tuple, list):
        inner = args[0] if args else str
        items = tuple(convert_value(v, inner, where) for v in value.split(",") if v.strip())
        return items if origin is tuple else list(items)
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            return annotation(value)
    except ValueError:
        raise UsageError(
            f"{where}={value!r} is not a valid {annotation.__name__}"
        ) from None
    return value


def build_config(config_cls: type[C], options: Mapping[str, Any], owner: str) -> C:
    """Build ``config_cls`` from options, converting strings to the declared field types.

    Args:
        config_cls: A dataclass type.
        options: Field values, as strings from the command line or typed values.
        owner: What the config belongs to, e.g. ``"distiller 'hinton'"``, for messages.

    Raises:
        UsageError: An unknown key, or a value that does not convert.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise UsageError(f"{owner} has no option {', '.join(unknown)} (valid: {valid})")
    hints = typing.get_type_hints(config_cls)
    values = {
        key: convert_value(value, hints[key], f"{owner} option {key}")
        for key, value in options.items()
    }
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{owner}: {exc}") from None
