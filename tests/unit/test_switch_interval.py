"""The daemon's loop waits less for the GIL while another thread runs Python work."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time

import pytest

from dsm_tr181.switch_interval import SWITCH_INTERVAL, hand_over_promptly

pytestmark = pytest.mark.unit


def loop_lateness(ticks: int) -> float:
    """Median lateness (s) of a 1 ms timer on an asyncio loop while a thread spins in Python."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(200))  # byte code and short C calls: the GIL moves only when asked

    async def ticker() -> list[float]:
        late = []
        for _ in range(ticks):
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - due)
        return late

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        return statistics.median(asyncio.run(ticker()))
    finally:
        stop.set()
        worker.join()


def test_the_loop_gets_the_gil_back_sooner() -> None:
    default = sys.getswitchinterval()
    try:
        slow = loop_lateness(100)
        hand_over_promptly()
        prompt = loop_lateness(100)
    finally:
        sys.setswitchinterval(default)
    assert default == 0.005 and slow > 0.003  # CPython's default: two waits of up to 5 ms
    assert prompt < slow / 2


def test_the_daemon_sets_it_before_anything_else() -> None:
    """main() shortens the interval first: even a run refused for its configuration has it."""
    code = (
        "import sys; from dsm_tr181.daemon import main\n"
        "assert main(['--config', '/nonexistent/dsm.toml']) == 2\n"
        "print(sys.getswitchinterval())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(run.stdout) == SWITCH_INTERVAL
