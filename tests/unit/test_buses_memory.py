"""A large reply's memory goes back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from dsm_tr181.buses import memory
from dsm_tr181.buses.memory import release_free_memory
from dsm_tr181.lcm.tables import DU_STATE_CHANGE, SM
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel

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


# A worker thread frees ~7 MiB after a large buffer was freed (glibc's thresholds rose): the RSS
# it keeps after malloc_trim, in MiB.
_THREAD_HEAP = """
import sys, threading
from dsm_tr181.buses import memory
if sys.argv[1] == "one": assert memory.one_heap()
if sys.argv[1] == "daemon":  # what dsm's main() does first, even when its configuration is refused
    from dsm_tr181.daemon import main
    assert main(["--config", "/nonexistent/dsm.toml"]) == 2
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
big = bytearray(30 << 20); del big
base = rss()
def work():
    held = [bytes(2000) for _ in range(3500)]
    del held
thread = threading.Thread(target=work); thread.start(); thread.join()
memory.release_free_memory()
print(rss() - base)
"""


def test_with_one_heap_what_a_worker_thread_freed_goes_back_to_the_system() -> None:
    if not release_free_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")

    def kept(heaps: str) -> float:
        run = subprocess.run([sys.executable, "-c", _THREAD_HEAP, heaps], capture_output=True, text=True, check=True)
        return float(run.stdout)

    assert kept("many") > 2  # glibc's default: the thread's heap keeps it (4.9 to 7 MiB measured here)
    assert kept("one") < 1
    assert kept("daemon") < 1


def test_an_operations_end_is_followed_by_a_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon trims after each DUStateChange! (an install's buffers), not after other changes."""
    trims: list[float] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(time.monotonic()) or True)
    dm = DataModel(load_schema())

    async def events() -> None:
        late = memory.LateTrim(delay=0.05)
        subscription = memory.trim_after_operations(dm, late)
        ee = dm.add_row(f"{SM}ExecEnv.", {"Name": "default"})
        dm.update(ee.path, {"Status": "Up"})
        await asyncio.sleep(0.1)
        assert trims == []
        dm.emit_event(
            DU_STATE_CHANGE,
            {
                "UUID": "00000000-0000-5000-8000-000000000001",
                "OperationPerformed": "Install",
                "CurrentState": "Installed",
            },
        )
        await asyncio.sleep(0.1)
        subscription.cancel()

    asyncio.run(events())
    assert len(trims) == 1


def test_large_replies_in_a_row_are_followed_by_one_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(time.monotonic()) or True)

    async def replies() -> float:
        late = memory.LateTrim(delay=0.05)
        for _ in range(5):
            late.after_large_work()
            await asyncio.sleep(0.01)
        last = time.monotonic()
        await asyncio.sleep(0.2)
        return last

    last = asyncio.run(replies())
    assert len(trims) == 1 and trims[0] >= last
