"""Every DUStateChange! reaches a controller: events are kept in the store until delivered.

An outcome is published at once when someone receives it (a bus front end, a control-socket
``events`` stream, a dsmcli waiting for its own request). When nobody does — start-up recovery
runs before any bus exists; a daemon may run with no bus and no client — it is kept in the
store and delivered, in order, to the next *durable* subscriber (a bus front end starting or an
``events`` stream), then deleted. The commit that makes an installed DU Installed writes its
event in the same transaction, so a crash right after that commit cannot lose it either.
TR-181 DUStateChange!: "the device MUST notify the Controller of any DU state changes within
24 hours of the time the operations were completed by the device" — an event is never dropped
for want of a listener.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dsm_tr181.lcm.records import PendingEventRecord
from dsm_tr181.lcm.tables import DU_STATE_CHANGE
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.notifications import Kind

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)


class Outcomes:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self._pending: dict[int, PendingEventRecord] = {}
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    def restore(self, stored: list[PendingEventRecord]) -> None:
        for record in sorted(stored, key=lambda r: r.seq):
            self._pending[record.seq] = record
        self._seq = itertools.count(max(self._pending, default=0) + 1)
        if self._pending:
            log.info("%d undelivered DUStateChange! kept for the first subscriber", len(self._pending))
        self._loop = asyncio.get_running_loop()  # a front end may subscribe from another thread
        self.lcm.dm.notifications.on_listener(self._listener_added)

    def record(self, args: Mapping[str, Value]) -> PendingEventRecord:
        """The stored form of a DUStateChange! (not yet committed, not yet published)."""
        event = self.lcm.dm.schema.event(DU_STATE_CHANGE)
        assert event is not None
        text = {name: event.arguments[name].type.format(value) for name, value in args.items()}
        return PendingEventRecord(seq=next(self._seq), path=DU_STATE_CHANGE, args=text)

    def deliver(self, record: PendingEventRecord, committed: bool = False, request_id: str = "") -> None:
        """Publish ``record`` if someone listens (then forget it), else keep it in the store."""
        if self.lcm.dm.notifications.listening(Kind.EVENT, record.path):
            self._publish(record, request_id)
            if committed:
                self.lcm.commit(delete=[record])
            return
        if not committed:
            self.lcm.commit(put=[record])
        self._pending[record.seq] = record
        log.info("DUStateChange! kept until a controller subscribes (%d pending)", len(self._pending))

    def _listener_added(self) -> None:
        if self._pending and self._loop is not None:
            self._loop.call_soon_threadsafe(self._replay)

    def _replay(self) -> None:
        if not self.lcm.dm.notifications.listening(Kind.EVENT, DU_STATE_CHANGE, durable=True):
            return
        records = [self._pending.pop(seq) for seq in sorted(self._pending)]
        for record in records:
            self._publish(record)
        self.lcm.commit(delete=list(records))
        log.info("delivered %d kept DUStateChange! events", len(records))

    def _publish(self, record: PendingEventRecord, request_id: str = "") -> None:
        event = self.lcm.dm.schema.event(record.path)
        assert event is not None
        args = {name: event.arguments[name].type.parse(text) for name, text in record.args.items()}
        self.lcm.dm.emit_event(record.path, args, request_id)
