"""One answer for identical reads of an unchanged tree: a whole-tree read is made once for
every client asking for it at about the same time.

Reading the whole tree at 1000 DUs costs the daemon ~60 ms of CPU (walk, copy, encode). Two
clients (a USP agent and a TR-069 agent, say) polling it in a loop kept the daemon busy
100 % of the time, and the OS then let a small request of a third client wait for the
daemon's turn on the CPU (p99 x15-20 the idle figure on 2 cores; bench/stress_bench.py (b)).

Two rules, for reads of object paths only (a parameter path reads one value, made anew):

* a read arriving while the same read is being made waits for it, and takes its answer if
  that answer was copied from the tree as it was when the request arrived, or later (the
  tree's ``generation`` says so); else it makes its own;
* a large answer (at least ``memory.LARGE`` bytes) is kept for ``reuse`` seconds and given
  to the same read while the tree has not changed since it was copied. Every change a get
  could see moves the generation; values computed when read (``Uptime``, ``MemoryInUse``,
  ``AvailableMemory`` ...) are the only ones such an answer can give up to ``reuse``
  seconds old. ``reuse`` 0 keeps nothing.

A kept answer is dropped when its time is up (``on_drop`` then runs: the daemon hands the
memory back to the system).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dsm_tr181.buses.memory import LARGE
from dsm_tr181.tree.datamodel import DataModel

KEPT = 4  # answers kept at most (the oldest goes first)
Key = tuple[tuple[str, ...], int, object]  # paths, max_depth, the encoder


@dataclass(frozen=True, slots=True)
class _Answer:
    generation: int  # the tree's generation the values were copied at
    taken: float  # time.monotonic() then
    pieces: list[bytes]


class SharedReads:
    """Runs ``produce`` for a read, or hands out an answer another identical read made."""

    def __init__(self, dm: DataModel, reuse: float, on_drop: Callable[[], None] = lambda: None) -> None:
        self._dm = dm
        self.reuse = reuse
        self._on_drop = on_drop
        self._flights: dict[Key, asyncio.Task[_Answer]] = {}
        self._kept: dict[Key, tuple[_Answer, asyncio.TimerHandle]] = {}

    async def read(
        self,
        paths: Sequence[str],
        max_depth: int,
        encoder: object,
        produce: Callable[[], Awaitable[tuple[list[bytes], int]]],
    ) -> list[bytes]:
        """The answer's pieces (the caller may consume the list: it gets its own);
        ``produce()`` returns the pieces and the generation its values were copied at."""
        if not any(path.endswith(".") for path in paths):
            return (await produce())[0]
        key: Key = (tuple(paths), max_depth, encoder)
        arrived = self._dm.generation
        kept = self._kept.get(key)
        if kept is not None and kept[0].generation == arrived and time.monotonic() - kept[0].taken < self.reuse:
            return list(kept[0].pieces)
        while True:
            flight = self._flights.get(key)
            if flight is None:  # a task of its own: a client that leaves does not end it for the others
                flight = self._flights[key] = asyncio.ensure_future(self._make(key, produce))
                flight.add_done_callback(_retrieve)
                return list((await asyncio.shield(flight)).pieces)
            answer = await asyncio.shield(flight)
            if answer.generation >= arrived:
                return list(answer.pieces)
            # copied before this request came: a flight started since (or this one's) copies later

    def clear(self) -> None:
        for _, drop in self._kept.values():
            drop.cancel()
        self._kept.clear()

    async def _make(self, key: Key, produce: Callable[[], Awaitable[tuple[list[bytes], int]]]) -> _Answer:
        try:
            pieces, generation = await produce()
        finally:
            del self._flights[key]  # one flight per read at a time: this one
        answer = _Answer(generation, time.monotonic(), pieces)
        if self.reuse > 0 and sum(map(len, pieces)) >= LARGE:
            self._keep(key, answer)
        return answer

    def _keep(self, key: Key, answer: _Answer) -> None:
        self._drop(key)
        if len(self._kept) >= KEPT:
            self._drop(next(iter(self._kept)))
        drop = asyncio.get_running_loop().call_later(self.reuse, self._expire, key)
        self._kept[key] = (answer, drop)

    def _expire(self, key: Key) -> None:
        self._kept.pop(key, None)
        self._on_drop()

    def _drop(self, key: Key) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            kept[1].cancel()


def _retrieve(flight: asyncio.Task[_Answer]) -> None:
    """Its fault reached every waiting client; if all had left, asyncio need not report it."""
    if not flight.cancelled():
        flight.exception()
