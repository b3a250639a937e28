"""Repeated errors logged a few times, then counted: a flood of failing clients must not flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most ``burst`` records per ``window`` seconds; the rest are counted and the count logged once."""

    def __init__(
        self, logger: logging.Logger, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._clock = clock
        self._start = clock()
        self._count = 0
        self._suppressed = 0

    def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        if now - self._start >= self._window:
            if self._suppressed:
                self._log.log(
                    level, "%d more like the above in %.0f s, not logged", self._suppressed, now - self._start
                )
            self._start, self._count, self._suppressed = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            self._log.log(level, message, *args, exc_info=exc_info)
        else:
            self._suppressed += 1
