"""Adapter configuration sections as typed dataclasses.

Every adapter (packager, runtimes, buses) reads its own ``[section]`` of the daemon's
configuration into a frozen dataclass with :func:`build_section`: unknown keys and values
of the wrong type are a ValueError in one style, ``section.key: reason`` (the daemon's own
sections are checked with the same :func:`check_known` and :func:`check_value`); value
ranges are the dataclass's own ``__post_init__`` business.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # a type-checker-only module

T = TypeVar("T", bound="DataclassInstance")


def build_section(cls: type[T], section: Mapping[str, Any], where: str) -> T:
    """``cls(**section)`` with each value checked against (and converted to) its field's type.

    Supported field types: bool, int, float (an int is accepted), str, Path (from a
    non-empty string), tuple[str, ...] (from a list of strings), and ``X | None``.
    """
    hints = typing.get_type_hints(cls)
    check_known(where, section, [field.name for field in dataclasses.fields(cls)])
    return cls(**{key: check_value(where, key, hints[key], value) for key, value in section.items()})


def check_known(where: str, section: Mapping[str, Any], known: list[str]) -> None:
    """ValueError ``where.key: unknown key (known: ...)`` for the first key not in ``known``."""
    unknown = sorted(str(key) for key in set(section) - set(known))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(known)})")


def check_value(where: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` converted to the type ``hint``, or ValueError ``where.key: must be ..., not ...``."""
    return _convert(hint, value, f"{where}.{key}")


def _convert(hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, UnionType):
        options = [option for option in typing.get_args(hint) if option is not NoneType]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        hint = options[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "an integer"
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        expected = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    elif hint is Path:
        if isinstance(value, str) and value:
            return Path(value)
        expected = "a path"
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(value)
        expected = "a list of strings"
    else:
        raise TypeError(f"{where}: unsupported field type {hint!r}")
    raise ValueError(f"{where}: must be {expected}, not {value!r}")
