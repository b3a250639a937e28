"""rbus value-change subscriptions, served from the tree's ValueChange notifications.

Left to itself, rbus polls a subscribed property's get handler every 2 s from its own
thread (autoPublish). Instead the subscribe handler declines autoPublish and records
the subscribed name; every ValueChange of a parameter it covers is published at once
with the value and the old value rbus requires in the event data.

The subscribe handler runs under rbus's subscription lock, which publishing also
takes: it must never wait for the loop. It only counts subscribers and schedules the
loop-side bookkeeping (the concrete parameters a name covers and their last values).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable

from dsm_tr181.buses.rbus_ffi import SubscribeAction, Typed
from dsm_tr181.buses.rbus_values import typed
from dsm_tr181.errors import Fault
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Notification
from dsm_tr181.tree.paths import schema_path

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Typed]], None]  # parameter path, {"value", "oldValue"}


class ValueChanges:
    def __init__(self, dm: DataModel, loop: asyncio.AbstractEventLoop, publish: Publish) -> None:
        self._dm = dm
        self._loop = loop
        self._publish = publish
        self._lock = threading.Lock()
        self._subscribers: dict[str, int] = {}  # subscribed name -> subscriptions (bus threads)
        # On the loop only:
        self._covered: dict[str, set[str]] = {}  # subscribed name -> concrete parameter paths
        self._wildcards: dict[str, re.Pattern[str]] = {}  # names with "*" -> what they match
        self._last: dict[str, Value] = {}  # covered parameter path -> last value announced

    def on_subscribe(self, action: SubscribeAction, name: str, interval: int) -> bool:
        """The property subscribe handler (bus thread); returns rbus's autoPublish."""
        if interval:
            return True  # interval subscriptions: rbus samples the get handler on its own
        with self._lock:
            count = self._subscribers.get(name, 0) + (1 if action is SubscribeAction.SUBSCRIBE else -1)
            if count > 0:
                self._subscribers[name] = count
            else:
                self._subscribers.pop(name, None)
        if action is SubscribeAction.SUBSCRIBE and count == 1:
            self._loop.call_soon_threadsafe(self._watch, name)
        elif action is SubscribeAction.UNSUBSCRIBE and count <= 0:
            self._loop.call_soon_threadsafe(self._unwatch, name)
        return False

    def changed(self, note: Notification) -> None:
        """A ValueChange (on the loop): publish it if a subscription covers it."""
        if note.path not in self._last:
            return
        parameter = self._dm.schema.parameter(schema_path(note.path))
        assert parameter is not None and note.value is not None
        old, self._last[note.path] = self._last[note.path], note.value
        self._publish(note.path, {"value": typed(parameter.type, note.value), "oldValue": typed(parameter.type, old)})

    def created(self, note: Notification) -> None:
        """An ObjectCreation (on the loop): extend wildcard subscriptions to the new row."""
        if not self._wildcards:
            return
        for path, value in self._dm.get_values([note.path]).items():
            for name, pattern in self._wildcards.items():
                if pattern.fullmatch(path):
                    self._covered[name].add(path)
                    self._last[path] = value

    def deleted(self, note: Notification) -> None:
        """An ObjectDeletion (on the loop): forget the parameters of the row."""
        if not self._last:
            return
        for path in [path for path in self._last if path.startswith(note.path)]:
            del self._last[path]
        for covered in self._covered.values():
            covered.difference_update([path for path in covered if path.startswith(note.path)])

    def _watch(self, name: str) -> None:
        try:
            values = self._dm.get_values([name])
        except Fault as fault:
            log.info("rbus: value-change subscription to %s covers nothing: %s", name, fault)
            values = {}
        self._covered[name] = set(values)
        self._last.update(values)
        if "*" in name:
            self._wildcards[name] = _wildcard(name)

    def _unwatch(self, name: str) -> None:
        gone = self._covered.pop(name, set())
        self._wildcards.pop(name, None)
        still = set().union(*self._covered.values())
        for path in gone - still:
            self._last.pop(path, None)


def _wildcard(name: str) -> re.Pattern[str]:
    """ "A.*.B" matches "A.3.B"; an "[alias]" segment matches only itself (no new rows)."""
    return re.compile(r"\.".join(r"\d+" if part == "*" else re.escape(part) for part in name.split(".")))
