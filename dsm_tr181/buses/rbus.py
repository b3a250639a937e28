"""The rbus front end: the served data model as rbus data elements.

Every parameter of the supported model is a property (writable ones with a set
handler), every table a table element ``...Table.`` (see _table), every command a method and
every event an event element. librbus knows rows only when they are registered, so
every existing row is registered at start and the tree's ObjectCreation and
ObjectDeletion notifications register and unregister rows as they come and go;
registering publishes the row events from which RDK's USP agent makes ObjectAdded and
ObjectDeleted.

Handlers run on rbus's threads and never touch the tree: each hands its work to the
daemon's loop (:class:`~dsm_tr181.buses.loop_bridge.LoopBridge`). What the loop sends
because the tree changed (rows, events, value changes, asynchronous method answers)
goes through the :class:`~dsm_tr181.buses.rbus_outbox.Outbox`: in order, from rbus's
callback thread, never under a partial get librbus is expanding there.

When rtrouted restarts, providers reconnect but the broker forgets their elements, and
librbus gives a provider no sign of it: a watchdog (``watchdog_interval``) reads one of
our own properties through the broker when nothing was routed to us lately and, only when
the broker answers that it knows no such destination, waits until no handler runs, closes
and starts the provider again (:mod:`.rbus_watchdog`: slow is not forgotten).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.rbus_ffi import EventType, RbusCallFailed, Typed
from dsm_tr181.buses.rbus_gets import SnapshotReads
from dsm_tr181.buses.rbus_methods import Methods
from dsm_tr181.buses.rbus_outbox import Outbox
from dsm_tr181.buses.rbus_sets import SetBatches
from dsm_tr181.buses.rbus_valuechange import ValueChanges
from dsm_tr181.buses.rbus_values import carried_type, typed
from dsm_tr181.buses.rbus_watchdog import QUIET_BEFORE_CLOSE, Verdict, after_probe, before_probe
from dsm_tr181.errors import AdapterUnavailable
from dsm_tr181.schema.flavours import Flavour
from dsm_tr181.schema.model import Object
from dsm_tr181.sections import Invalid, build_section
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.nodes import Node
from dsm_tr181.tree.notifications import Kind, Notification, Subscription
from dsm_tr181.tree.paths import schema_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RbusConfig:
    """The ``[bus.rbus]`` section."""

    library: str = rbus_ffi.DEFAULT_LIBRARY  # a path, or a name for the dynamic loader
    component: str = "dsm-tr181"  # rbus component name
    # Seconds a handler waits for the loop: below the 15 s after which rbus consumers give
    # up on a get or set (60 s for a multi-parameter set, 120 s for a partial get).
    call_timeout: float = 10.0
    # Subtrees not registered on rbus, e.g. ["Device.DeviceInfo."] on an RDK-B image where
    # another component (PandM) owns those names.
    skip: tuple[str, ...] = ()
    # Seconds between checks that the broker still routes to us (0: never). A restarted
    # rtrouted forgets every element, and librbus does not tell the provider.
    watchdog_interval: float = 10.0
    # The TR-181 flavour whose parameters are registered (dsm_tr181/schema/flavours.py):
    # "both" by default, because on RDK-B both agents read them on rbus — the TR-069 agent
    # (CcspTr069Pa) sets the CWMP-only ones (ExecutionUnit.{i}.RequestedState ...), and the
    # USP agent (obuspa) serves only the elements it is configured or built with.
    flavour: str = Flavour.BOTH.value

    def __post_init__(self) -> None:
        if not self.library:
            raise Invalid("library", "must not be empty")
        if not self.component:
            raise Invalid("component", "must not be empty")
        if self.call_timeout <= 0:
            raise Invalid("call_timeout", "must be > 0")
        if self.watchdog_interval < 0:
            raise Invalid("watchdog_interval", "must be >= 0")
        if self.flavour not in {f.value for f in Flavour}:
            raise Invalid("flavour", f"{self.flavour!r} is not one of {', '.join(f.value for f in Flavour)}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> RbusConfig:
        """Build from the configuration section; ValueError on unknown keys, wrong types or values."""
        return build_section(cls, section, "bus.rbus")


@dataclass
class _Connection:
    """What lives from start() to close(): waiting callers and subscriptions die with it."""

    handle: rbus_ffi.Handle
    activity: rbus_ffi.HandlerActivity  # its handlers, as the watchdog sees them
    outbox: Outbox
    methods: Methods
    changes: ValueChanges
    subscription: Subscription | None = None


class RbusProvider:
    """Serves a DataModel on rbus; implements BusProvider."""

    name = "rbus"

    def __init__(self, dm: DataModel, config: RbusConfig, loop: asyncio.AbstractEventLoop) -> None:
        dm = dm.view(Flavour(config.flavour))
        self.dm = dm
        self.config = config
        self._loop = loop
        self._bridge = LoopBridge(loop, config.call_timeout)
        self._reads = SnapshotReads(dm, self._bridge)
        self._sets = SetBatches(self._apply_set)
        self._connection: _Connection | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._probe = ""  # a property of ours the watchdog reads through the broker
        self._rows_by_rbus = False  # rbus itself (un)registers the rows of its add/remove-row calls

    @classmethod
    def create(cls, dm: DataModel, section: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> RbusProvider:
        return cls(dm, RbusConfig.from_config(section), loop)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> RbusProvider:
        """The adapter factory (dsm_tr181/adapters.py): the section is checked first."""
        config = RbusConfig.from_config(section)
        datamodel, loop = context.serving()
        return cls(datamodel, config, loop)

    async def start(self) -> None:
        """Open the handle, register every element and row, follow the tree.

        AdapterUnavailable when librbus cannot be loaded or no broker answers (rbus_open
        fails after about 3 s), so that the daemon can fall back to another bus.
        """
        await self._open()
        if self.config.watchdog_interval and self._watchdog is None:
            self._watchdog = self._loop.create_task(self._watch(), name="rbus-watchdog")

    async def _watch(self) -> None:
        """Register everything again when the broker has forgotten us (a restarted
        rtrouted), never merely because we are slow (see :mod:`.rbus_watchdog`); retry
        until the broker answers again."""
        interval = self.config.watchdog_interval
        while True:
            await asyncio.sleep(interval)
            connection = self._connection
            try:
                if connection is not None and not await self._forgotten(connection, interval):
                    continue
                if connection is not None and not await self._quiet(connection, interval):
                    log.info("rbus: handlers still running; registering again later")
                    continue
                await self._close_connection()
                await self._open()
            except AdapterUnavailable as exc:
                log.warning("rbus: cannot register again yet: %s", exc)
            except Exception:  # the watchdog must outlive what it does not expect
                log.exception("rbus: registering again failed; retrying")

    async def _forgotten(self, connection: _Connection, interval: float) -> bool:
        if before_probe(connection.activity.quiet_for(), interval) is Verdict.ALIVE:
            return False
        try:
            await self._loop.run_in_executor(None, connection.handle.get, self._probe)
            return False
        except RbusCallFailed as exc:
            if after_probe(exc.code) is Verdict.BUSY:
                log.info("rbus: our own property could not be read (%s): busy, not forgotten", exc)
                return False
            log.warning("rbus: the broker no longer routes to %s (%s): registering again",
                        self.config.component, exc)  # fmt: skip
            return True

    async def _quiet(self, connection: _Connection, interval: float) -> bool:
        """Wait (at most an interval) until no handler has run for a moment: librbus must
        not be using the handle when it is closed."""
        deadline = self._loop.time() + interval
        while connection.activity.quiet_for() < QUIET_BEFORE_CLOSE:
            if self._loop.time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _open(self) -> None:
        if self._connection is not None:
            raise RuntimeError("the rbus provider is already started")
        rbus = rbus_ffi.load(self.config.library)
        try:
            handle = await self._loop.run_in_executor(None, rbus_ffi.Handle, rbus, self.config.component)
        except RbusCallFailed as exc:
            raise AdapterUnavailable(f"rbus broker unreachable (is rtrouted running?): {exc}") from exc
        outbox = Outbox(handle, self._trigger())
        connection = _Connection(
            handle,
            handle.activity,
            outbox,
            Methods(self.dm, self._bridge, outbox.post),
            ValueChanges(self.dm, self._loop, partial(self._publish, outbox, kind=EventType.VALUE_CHANGED)),
        )
        try:
            elements = self._elements(connection)
            self._probe = outbox.trigger
            await self._loop.run_in_executor(None, handle.register, elements)
        except BaseException as exc:
            await self._loop.run_in_executor(None, handle.close)
            if isinstance(exc, RbusCallFailed):  # e.g. another component owns one of the names
                raise AdapterUnavailable(f"rbus refused the data elements: {exc}") from exc
            raise
        # No await until every row is posted: no tree change can come between the rows
        # posted now and the notifications followed from now on.
        self._connection = connection
        connection.subscription = self.dm.subscribe(self._notified, durable=True)
        existing = [node for node in self.dm.root.walk() if node.schema.multi_instance and self._served(node.path)]
        for row in existing:
            self._register_row(outbox, row)
        outbox.start()
        await self.synced()
        log.info("rbus: %s serves %d elements and %d rows", self.config.component, len(elements), len(existing))

    async def synced(self) -> None:
        """Wait until rbus shows every change of the tree so far (it follows by a bus
        round trip)."""
        if self._connection is not None:
            await asyncio.wrap_future(self._connection.outbox.synced())

    async def close(self) -> None:
        """Stop following the tree, answer waiting callers, close the handle (idempotent)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await self._close_connection()

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.subscription is not None:
            connection.subscription.cancel()
        # Off the loop: both wait for rbus's threads, whose handlers may wait for the loop.
        await self._loop.run_in_executor(None, connection.outbox.stop)
        connection.methods.close()
        await self._loop.run_in_executor(None, connection.handle.close)

    # ---- elements ----

    def _served(self, path: str) -> bool:
        return not path.startswith(self.config.skip)

    def _trigger(self) -> str:
        """The outbox's trigger and the watchdog's probe: the first served parameter outside
        any table (its element is never freed under a get)."""
        for obj in self.dm.schema.objects.values():
            if self._served(obj.path) and "{i}" not in obj.path and obj.parameters:
                return obj.path + next(iter(obj.parameters))
        raise AdapterUnavailable("rbus: no parameter outside a table is served (see bus.rbus.skip)")

    def _elements(self, connection: _Connection) -> list[rbus_ffi.Element]:
        elements: list[rbus_ffi.Element] = []
        for obj in self.dm.schema.objects.values():
            if not self._served(obj.path):
                continue
            if obj.multi_instance:
                elements.append(self._table(obj))
            for name, parameter in obj.parameters.items():
                elements.append(
                    rbus_ffi.Property(
                        obj.path + name,
                        carried_type(parameter.type),
                        self._reads.get,
                        set=self._sets.on_set if parameter.writable else None,
                        subscribe=connection.changes.on_subscribe,
                        own_get=connection.outbox.flush if obj.path + name == connection.outbox.trigger else None,
                    )
                )
            elements += [rbus_ffi.Method(obj.path + name, connection.methods.call) for name in obj.commands]
            elements += [rbus_ffi.Event(obj.path + name) for name in obj.events]
        return elements

    def _table(self, obj: Object) -> rbus_ffi.Table:
        # By the table's own name (``…DeploymentUnit.``), not ``…DeploymentUnit.{i}.`` (librbus
        # builds the same tree from both): consumers subscribe to row events by that name, and
        # after a restart librbus restores a cached subscription only on an element of the
        # equal name (rbus_subscriptions.c, _compareEventNameToElemName) — RDK's USP agent
        # never subscribes again.
        name = obj.path.removesuffix("{i}.")
        if not obj.creatable:
            return rbus_ffi.Table(name)
        return rbus_ffi.Table(name, add_row=self._add_row, remove_row=self._remove_row)

    # ---- handlers (bus threads) ----

    def _apply_set(self, values: dict[str, Any]) -> None:
        self._bridge.call(self.dm.set, values)

    def _add_row(self, table: str, alias: str | None) -> int:
        return self._bridge.call(self._add_on_loop, table, alias)

    def _remove_row(self, row: str) -> None:
        self._bridge.call(self._delete_on_loop, row)

    # ---- on the loop ----

    def _add_on_loop(self, table: str, alias: str | None) -> int:
        self._rows_by_rbus = True
        try:
            added = self.dm.add(table, {"Alias": alias} if alias else {})
        finally:
            self._rows_by_rbus = False
        return int(added[0].path.rstrip(".").rpartition(".")[2])

    def _delete_on_loop(self, row: str) -> None:
        self._rows_by_rbus = True
        try:
            self.dm.delete([row])
        finally:
            self._rows_by_rbus = False

    def _notified(self, note: Notification) -> None:
        connection = self._connection
        assert connection is not None
        match note.kind:
            case Kind.VALUE_CHANGE:
                self._reads.changed()
                connection.changes.changed(note)
            case Kind.OBJECT_CREATION:
                self._reads.changed()
                node = self.dm.find_node(note.path)
                if node is not None and not self._rows_by_rbus and self._served(note.path):
                    self._register_row(connection.outbox, node)
                connection.changes.created(note)
            case Kind.OBJECT_DELETION:
                self._reads.changed()
                if not self._rows_by_rbus and self._served(note.path):
                    connection.outbox.post(partial(connection.handle.unregister_row, note.path))
                connection.changes.deleted(note)
            case Kind.EVENT:
                event = self.dm.schema.event(schema_path(note.path))
                assert event is not None
                data = {name: typed(event.arguments[name].type, value) for name, value in note.args.items()}
                self._publish(connection.outbox, note.path, data, EventType.GENERAL)
            case Kind.OPERATION_COMPLETE:
                connection.methods.completed(note)

    def _register_row(self, outbox: Outbox, row: Node) -> None:
        assert row.parent is not None
        table = row.parent.tables[row.schema.name].path
        alias = row.values.get("Alias")
        named = alias if isinstance(alias, str) and alias else None
        outbox.post(lambda: outbox.handle.register_row(table, row.number, named))

    def _publish(self, outbox: Outbox, name: str, data: Mapping[str, Typed], kind: EventType) -> None:
        def publish() -> None:
            outbox.handle.publish(name, data, kind)

        outbox.post(publish)
