"""What the provider sends because the tree changed, in the tree's order, from rbus's
callback thread.

librbus expands partial and wildcard gets on its callback thread by walking its element
tree without a lock. A row unregistered from another thread meanwhile is freed under
the walker: reproduced with rows deleted on the loop during partial gets (garbage
names reach the get handler, mutex errors, then a hang). rbus serves a single-name get
on that same thread, strictly between two requests, so the loop only posts its actions
here; a thread of ours gets one of this component's own properties (the ``trigger``, a
property outside any row) whenever actions wait, and that property's get handler runs
them first when the requester is this component (rbus_ffi.Property.own_get). Nothing is
published for it: no private method appears on the bus. A consumer's partial get never
runs them: its requester is another component.

Row registrations, events, value changes and asynchronous method answers all go this
way, so a subscriber sees them in the order the tree made them: the row-created event
of a DeploymentUnit before the DUStateChange! naming it, the row before the InstallDU()
answer. Each follows the tree by one bus round trip (well under a millisecond).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.rbus_ffi import RbusCallFailed

log = logging.getLogger(__name__)

BATCH: Final = 200  # actions per method call: registering a row costs up to ~1 ms
RETRY: Final = 0.5  # seconds before invoking again after a failed call

Action = Callable[[], None]


class Outbox:
    def __init__(self, handle: rbus_ffi.Handle, trigger: str) -> None:
        """``trigger``: a property of this component, outside any row, whose get handler
        calls :meth:`flush` when this component itself asks."""
        self.handle = handle
        self.trigger = trigger
        self._actions: deque[Action] = deque()
        self._posted = 0  # actions ever posted
        self._done = 0  # actions ever run
        self._waiters: list[tuple[int, concurrent.futures.Future[None]]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rbus-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def post(self, action: Action) -> None:
        """Run ``action`` on rbus's callback thread after every action posted before."""
        with self._wake:
            self._actions.append(action)
            self._posted += 1
            self._wake.notify()

    def synced(self) -> concurrent.futures.Future[None]:
        """Done once every action posted so far has run (or the outbox stopped)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._wake:
            if self._done >= self._posted or self._stopping:
                future.set_result(None)
            else:
                self._waiters.append((self._posted, future))
        return future

    def stop(self) -> None:
        """Stop invoking (blocks until the thread ends); actions still waiting are dropped."""
        with self._wake:
            self._stopping = True
            self._actions.clear()
            self._wake.notify()
            waiters, self._waiters = self._waiters, []
        if self._thread.is_alive():
            self._thread.join()
        for _, future in waiters:
            future.set_result(None)

    def flush(self) -> None:
        """On rbus's callback thread, from the trigger's get handler: run up to BATCH actions."""
        with self._wake:
            batch = [self._actions.popleft() for _ in range(min(BATCH, len(self._actions)))]
        for action in batch:
            try:
                action()
            except RbusCallFailed as exc:
                log.warning("rbus: %s", exc)
            except Exception:
                log.exception("rbus: a posted action failed")
        with self._wake:
            self._done += len(batch)
            ready = [future for count, future in self._waiters if count <= self._done]
            self._waiters = [(count, future) for count, future in self._waiters if count > self._done]
        for future in ready:
            future.set_result(None)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or bool(self._actions))
                if self._stopping:
                    return
            try:
                self.handle.get(self.trigger)
            except RbusCallFailed as exc:
                log.warning("rbus: posted actions wait: %s", exc)
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping, RETRY)
