"""The tree's event bus: ValueChange, ObjectCreation, ObjectDeletion, Event, OperationComplete.

Subscribers are plain callables run synchronously, in subscription order, on the thread
that changed the tree (the daemon's loop). A subscriber that raises is logged and does
not stop the others.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dsm_tr181.errors import Fault
from dsm_tr181.schema.types import Value

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    VALUE_CHANGE = "ValueChange"
    OBJECT_CREATION = "ObjectCreation"
    OBJECT_DELETION = "ObjectDeletion"
    EVENT = "Event"
    OPERATION_COMPLETE = "OperationComplete"
    # Product-specific, not a USP notification: progress of a long command (download
    # bytes, stages), for local clients such as dsmcli. Buses do not forward it.
    PROGRESS = "Progress"


@dataclass(frozen=True)
class Notification:
    kind: Kind
    # ValueChange: parameter path; ObjectCreation/Deletion: object instance path (with dot);
    # Event: event path ("Device.SoftwareModules.DUStateChange!"); OperationComplete: command path;
    # Progress: the object being worked on (a DeploymentUnit row).
    path: str
    value: Value | None = None  # ValueChange
    # ObjectCreation: unique keys; Event: arguments; OperationComplete: output arguments;
    # Progress: {"stage": str, "done": int, "total": int (-1 unknown)}.
    args: Mapping[str, Value] = field(default_factory=dict)
    request_id: str = ""  # OperationComplete, Progress
    command_key: str = ""  # OperationComplete
    fault: Fault | None = None  # OperationComplete that failed


Subscriber = Callable[[Notification], None]


def _ignore(note: Notification) -> None:
    pass


class Subscription:
    def __init__(
        self, bus: Notifications, callback: Subscriber, kinds: frozenset[Kind], prefix: str, durable: bool = False
    ) -> None:
        self._bus = bus
        self.callback = callback
        self.kinds = kinds
        self.prefix = prefix
        # A listener that stays (a bus front end, an events stream), not one request's watch.
        self.durable = durable

    def matches(self, note: Notification) -> bool:
        return note.kind in self.kinds and note.path.startswith(self.prefix)

    def cancel(self) -> None:
        """No more notifications, not even from a publish under way; and the callback (whose
        closure often holds this subscription) is let go, so no cycle waits for the collector."""
        self._bus.unsubscribe(self)
        self.callback = _ignore


class Notifications:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._listener_hooks: list[Callable[[], None]] = []

    def subscribe(
        self, callback: Subscriber, kinds: set[Kind] | None = None, prefix: str = "", durable: bool = False
    ) -> Subscription:
        """Receive ``kinds`` (default: every USP kind, not PROGRESS) for paths under ``prefix``;
        ``durable``: a listener that stays (kept events are delivered to it, see lcm.outcomes)."""
        sub = Subscription(self, callback, frozenset(kinds or set(Kind) - {Kind.PROGRESS}), prefix, durable)
        self._subscriptions.append(sub)
        if durable:
            for hook in list(self._listener_hooks):
                hook()
        return sub

    def on_listener(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` whenever a durable subscription is added."""
        self._listener_hooks.append(hook)

    def listening(self, kind: Kind, path: str, durable: bool = False) -> bool:
        """Does a subscription (a durable one, if ``durable``) receive ``kind`` notifications of ``path``?"""
        note = Notification(kind, path)
        return any(sub.matches(note) and (sub.durable or not durable) for sub in self._subscriptions)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def publish(self, note: Notification) -> None:
        for sub in list(self._subscriptions):
            if sub.matches(note):
                try:
                    sub.callback(note)
                except Exception:
                    log.exception("notification subscriber failed on %s %s", note.kind.value, note.path)
