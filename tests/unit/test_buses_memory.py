"""A large reply's memory goes back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from dsm_tr181.buses import memory
from dsm_tr181.buses.memory import release_free_memory

pytestmark = pytest.mark.unit


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_freed_heap_memory_is_returned() -> None:
    if not release_free_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")
    blocks = [bytearray(100_000) for _ in range(400)]  # 40 MB below the mmap threshold: the heap
    last = bytearray(100_000)  # holds the heap's top: freeing the rest cannot shrink it
    held = rss_mib()
    del blocks
    assert release_free_memory()
    assert rss_mib() < held - 30
    del last


def test_large_replies_in_a_row_are_followed_by_one_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(time.monotonic()) or True)

    async def replies() -> float:
        late = memory.LateTrim(delay=0.05)
        for _ in range(5):
            late.after_large_reply()
            await asyncio.sleep(0.01)
        last = time.monotonic()
        await asyncio.sleep(0.2)
        return last

    last = asyncio.run(replies())
    assert len(trims) == 1 and trims[0] >= last
