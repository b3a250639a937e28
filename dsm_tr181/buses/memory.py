"""Hand the memory of a large reply back to the system once it is sent.

A whole-tree read builds tens of megabytes of short-lived buffers (the copied values, the
encoded document). glibc keeps freed heap memory for reuse: in one process, a reply of
1000 DUs left ~15 MiB of it behind. ``malloc_trim(0)`` returns the free pages of every
arena to the system (a few ms); other C libraries (musl) lack it and this does nothing
there. The daemon trims once after start-up, and the control socket and D-Bus after large replies
(:class:`LateTrim`: once they pause, since a trim holds the loop up to several ms).
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

LARGE = 1 << 20  # bytes: a reply at least this large is followed by a trim


def _trim_function() -> Callable[[int], int] | None:
    try:  # the C library's symbols, as the interpreter has them (no search, no ldconfig)
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_trim = _trim_function()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True


class LateTrim:
    """Trims once no large reply was sent for ``delay`` seconds: clients reading the whole
    tree in a loop do not pay a trim each (call it on the loop)."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self._pending: asyncio.TimerHandle | None = None

    def after_large_reply(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(self.delay, release_free_memory)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
