"""Comparing DU versions: dotted numbers, with text parts compared as text."""

from __future__ import annotations

import re

_PART = re.compile(r"\d+|[A-Za-z]+")


def _key(version: str) -> list[tuple[int, int | str]]:
    # numbers sort after text at the same position ("1.0.rc1" < "1.0.1"), as in dpkg
    return [(1, int(p)) if p.isdigit() else (0, p) for p in _PART.findall(version)]


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``."""
    ka, kb = _key(a), _key(b)
    return (ka > kb) - (ka < kb)
