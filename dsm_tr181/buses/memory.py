"""Hand the memory of a large reply back to the system once it is sent.

A whole-tree read builds tens of megabytes of short-lived buffers (the reply, GLib's copy,
the D-Bus message). glibc keeps freed heap memory for reuse: after one read the daemon
stayed ~20 MiB above its idle size (bench/daemon_bench.py). ``malloc_trim(0)`` returns the
free pages of every arena to the system (a few ms); other C libraries (musl) lack it and
this does nothing there.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

LARGE = 1 << 20  # bytes: a reply at least this large is followed by a trim


def _trim_function() -> Callable[[int], int] | None:
    try:  # the C library's symbols, as the interpreter has them (no search, no ldconfig)
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_trim = _trim_function()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True
