"""Hand the memory of a large reply back to the system once it is sent.

A whole-tree read builds tens of megabytes of short-lived buffers (the copied values, the
encoded document). glibc keeps freed heap memory for reuse: in one process, a reply of
1000 DUs left ~15 MiB of it behind. ``malloc_trim(0)`` returns the free pages of every
arena to the system (a few ms); other C libraries (musl) lack it and this does nothing
there. The daemon trims once after start-up, the control socket and D-Bus after large replies,
and the daemon after Install, Update and Uninstall (:func:`trim_after_operations`): an
install frees its read-ahead and unpacking buffers at its end. Each is a :class:`LateTrim`:
once they pause, since a trim holds the loop up to several ms.

One heap (:func:`one_heap`, at start): glibc gives each thread that allocates its own heap,
and ``malloc_trim`` never shrinks the top of those. After one large buffer was freed glibc
also stops shrinking them when memory is freed (its thresholds rise up to 64 MiB), so a
worker thread that unpacked a large archive kept its ~7 MiB for good; the daemon's threads
mostly wait on the GIL, so one heap shared by all costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

from dsm_tr181.lcm.tables import DU_STATE_CHANGE
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind, Subscription

LARGE = 1 << 20  # bytes: a reply at least this large is followed by a trim


def _trim_function() -> Callable[[int], int] | None:
    try:  # the C library's symbols, as the interpreter has them (no search, no ldconfig)
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_trim = _trim_function()
_M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)


def one_heap() -> bool:
    """Every thread allocates from the main heap, which malloc_trim shrinks (call it before
    starting threads); False where the C library cannot."""
    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return mallopt(_M_ARENA_MAX, 1) == 1


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True


class LateTrim:
    """Trims once no large work (a large reply, an operation) ended for ``delay`` seconds:
    clients reading the whole tree in a loop do not pay a trim each (call it on the loop)."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self._pending: asyncio.TimerHandle | None = None

    def after_large_work(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(self.delay, release_free_memory)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


def trim_after_operations(dm: DataModel, late: LateTrim) -> Subscription:
    """``late`` trims after every DUStateChange! (the end of an Install, Update or Uninstall)."""
    return dm.subscribe(lambda note: late.after_large_work(), {Kind.EVENT}, DU_STATE_CHANGE)
