"""How long a thread may keep the GIL once another thread asks for it.

The asyncio loop serves every client and shares the GIL with threads that run long Python
work: the D-Bus GLib thread encoding a whole-tree reply, packager workers unpacking
archives, rbus handler threads. CPython lets the running thread keep the GIL for its switch
interval (5 ms by default) after another asked for it, and one turn of the loop can ask
twice (waking from epoll, then running its callbacks): while a 1000-DU GetBulk was encoded
on the GLib thread, a 1 ms timer on the loop came 10 to 16 ms late. With 1 ms, under 8 ms
(``bench/bus_bench.py``, the loop's longest stall). The cost is more frequent hand-overs
only while two threads want the GIL at once.
"""

from __future__ import annotations

import sys

SWITCH_INTERVAL = 0.001  # seconds


def hand_over_promptly() -> None:
    """Shorten the interpreter's switch interval to :data:`SWITCH_INTERVAL` (process-wide)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
