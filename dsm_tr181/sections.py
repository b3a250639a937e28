"""Configuration sections as typed dataclasses, and the one configuration error style.

Every adapter (packager, runtimes, buses) reads its own ``[section]`` of the daemon's
configuration into a frozen dataclass with :func:`build_section`: unknown keys and values
of the wrong type are a :class:`SectionError`, which reads ``section.key: reason``. Value
ranges are the dataclass's own ``__post_init__`` business: it raises :class:`Invalid`
(the key and the reason), which :func:`construct` (used by build_section) turns into the
same SectionError. The daemon's own sections (config.py, fleet) use the same functions.
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


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class SectionError(ConfigError):
    """A key of a section refused: ``section.key: reason`` (``section: reason`` for a whole
    section)."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        super().__init__(f"{where}.{key}: {reason}" if key else f"{where}: {reason}")
        self.where = where
        self.key = key
        self.reason = reason


class Invalid(ValueError):
    """A section dataclass refuses a value of ``key`` (its section is added by :func:`construct`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def construct(cls: type[T], where: str, values: Mapping[str, Any]) -> T:
    """``cls(**values)``, a value refused by its ``__post_init__`` a SectionError of ``where``."""
    try:
        return cls(**values)
    except Invalid as exc:
        raise SectionError(where, exc.key, exc.reason) from None


def build_section(cls: type[T], section: Mapping[str, Any], where: str) -> T:
    """``cls(**section)`` with each value checked against (and converted to) its field's type.

    Supported field types: bool, int, float (an int is accepted), str, Path (from a
    non-empty string), tuple[str, ...] (from a list of strings), and ``X | None``.
    """
    hints = typing.get_type_hints(cls)
    check_known(where, section, [field.name for field in dataclasses.fields(cls)])
    return construct(cls, where, {key: check_value(where, key, hints[key], value) for key, value in section.items()})


def check_known(where: str, section: Mapping[str, Any], known: list[str]) -> None:
    """SectionError ``where.key: unknown key (known: ...)`` for the first key not in ``known``."""
    unknown = sorted(str(key) for key in set(section) - set(known))
    if unknown:
        raise SectionError(where, unknown[0], f"unknown key (known: {', '.join(known)})")


def check_value(where: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` converted to the type ``hint``, or SectionError ``where.key: must be ..., not ...``."""
    return _convert(hint, value, where, key)


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
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
        raise TypeError(f"{where}.{key}: unsupported field type {hint!r}")
    raise SectionError(where, key, f"must be {expected}, not {value!r}")
