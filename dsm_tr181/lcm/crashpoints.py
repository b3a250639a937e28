"""Named points of the LCM's operations (each after a journaled step), for observers.

The product registers none: :func:`crashpoint` then does nothing. The test harness
(``tests/support/fault_injection.py``, which starts the daemon for the crash-recovery and
adversarial tests) registers one that kills the daemon or raises at a chosen point.
"""

from __future__ import annotations

from collections.abc import Callable

_observers: list[Callable[[str], None]] = []


def crashpoint(name: str) -> None:
    for observer in _observers:
        observer(name)


def observe(observer: Callable[[str], None]) -> None:
    """Call ``observer(name)`` at every point reached from now on."""
    _observers.append(observer)
