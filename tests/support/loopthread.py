"""An asyncio loop in a background thread, as the daemon runs the loop that owns the tree.

Tests and benchmarks act as the bus threads: they hand work to the loop with :meth:`call`
(a function) or :meth:`wait` (a coroutine) and block until it is done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dsm-loop", daemon=True)
        self._thread.start()

    def call(self, function: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """``function(*args)`` run on the loop; its result, or what it raised."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def wait(self, coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run ``coroutine`` on the loop until it ends; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
