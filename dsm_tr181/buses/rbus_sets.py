"""Multi-parameter rbus sets, applied atomically.

rbus calls the set handler once per parameter and marks only the last one of a set
with ``commit``; a session may also spread one set over several requests. The values
are collected per (requesting component, session id) and applied together with one
``DataModel.set`` when the commit comes, so a set applies entirely or not at all.

When rbus itself refuses a parameter partway through a set (one that is read-only
or unknown, or of the wrong type), the handler never hears of it and the parameters
before it stay collected. Such a leftover is dropped once it has been idle for
``MAX_IDLE`` (sessionless sets, whose parameters arrive back to back) or
``SESSION_MAX_IDLE`` (rbus sessions) seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from dsm_tr181.buses.rbus_ffi import SetRequest

log = logging.getLogger(__name__)

MAX_IDLE: Final = 1.0
SESSION_MAX_IDLE: Final = 60.0  # rbus's own timeout for a multi-parameter set

Apply = Callable[[dict[str, Any]], None]  # {parameter path: value}; raises Fault


@dataclass
class _Batch:
    values: dict[str, Any] = field(default_factory=dict)
    last: float = 0.0  # time.monotonic() of the last parameter


class SetBatches:
    def __init__(self, apply: Apply) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, int], _Batch] = {}

    def on_set(self, request: SetRequest) -> None:
        """One parameter of a set (on a bus thread); applies the set on commit."""
        key = (request.requester, request.session_id)
        now = time.monotonic()
        with self._lock:
            batch = self._batches.pop(key, None)
            limit = SESSION_MAX_IDLE if request.session_id else MAX_IDLE
            if batch is not None and now - batch.last > limit:
                log.warning("rbus: dropping uncommitted set of %s from %s", sorted(batch.values), key[0])
                batch = None
            batch = batch or _Batch()
            batch.values[request.name] = request.value
            batch.last = now
            if not request.commit:
                self._batches[key] = batch
                return
        self._apply(batch.values)
