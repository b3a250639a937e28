"""Comparing DU versions: dotted numbers, with text parts compared as text."""

from __future__ import annotations

import re

_PART = re.compile(r"\d+|[A-Za-z]+")
_TEXT, _END, _NUMBER = 0, 1, 2


def _key(version: str) -> list[tuple[int, int | str]]:
    # Numbers sort after text at the same position ("1.0.rc1" < "1.0.1"), and the end of a
    # version sorts between them: a text part where the other version ends marks a
    # pre-release ("2.0-rc1" < "2.0", as dpkg's "~" and SemVer), a number a later
    # release ("2.0" < "2.0.1").
    parts = [(_NUMBER, int(p)) if p.isdigit() else (_TEXT, p) for p in _PART.findall(version)]
    return [*parts, (_END, 0)]


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``."""
    ka, kb = _key(a), _key(b)
    return (ka > kb) - (ka < kb)
