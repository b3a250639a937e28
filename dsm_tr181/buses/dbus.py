"""The D-Bus front end: serves the DataModel as ``com.rdkcentral.DSM`` (see integration/dbus.md).

Threads. A :class:`~dsm_tr181.glib_thread.GLibThread` of its own owns the connection:
the connection is opened, the object registered and the name requested on it, so Gio
dispatches method calls there. Each call is handed to the asyncio loop
(:class:`~dsm_tr181.buses.loop_bridge.LoopBridge`) where
:class:`~dsm_tr181.buses.dbus_service.DsmService` runs the DataModel operation and builds
the reply variant; the GLib thread waits for it and sends it. A call the loop does not
start within ``call_timeout`` seconds is refused and never runs; a started one is
answered. For GetBulk the loop only copies the values
and the GLib thread encodes the JSON reply from the copy, so the loop is not held for
that. Notifications are turned into signal arguments on the loop, inside the DataModel's
subscription callback, and emitted on the GLib thread (``GLibThread.invoke``). The GLib
thread never touches the tree.

pydbus. pydbus (unmaintained since 2016) opens the connection and owns the name; it stays
inside this module. The object itself is registered with Gio directly: pydbus's method
wrapper names every D-Bus error after the Python exception class and builds each reply
through PyGObject's generic variant constructor — for a partial-path Get of a full tree,
seconds of work per call. Gio's invocation object gives the error names of
:mod:`~dsm_tr181.buses.dbus_errors` and takes the reply serialised by
:mod:`~dsm_tr181.buses.dbus_variants` as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsm_tr181.gi_repository import Gio, GLib  # before pydbus loads gi (see gi_repository.py)

# isort: split
import pydbus

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.buses.dbus_errors import INTERNAL_ERROR, error_name, fault_text, internal_error_text
from dsm_tr181.buses.dbus_interface import INTERFACE, INTROSPECTION
from dsm_tr181.buses.dbus_service import DsmService
from dsm_tr181.buses.dbus_variants import from_arguments
from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.memory import LARGE, LateTrim
from dsm_tr181.errors import Fault
from dsm_tr181.glib_thread import GLibThread
from dsm_tr181.schema.flavours import Flavour
from dsm_tr181.sections import Invalid, build_section
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Notification, Subscription

_log = logging.getLogger(__name__)

_BUS_TYPES = {"system": Gio.BusType.SYSTEM, "session": Gio.BusType.SESSION}


@dataclass(frozen=True)
class DbusConfig:
    """The ``dbus`` bus section of the configuration."""

    bus: str = "system"  # "system", "session" or a D-Bus address ("unix:path=/run/dsm/bus")
    name: str = INTERFACE  # the well-known name to own
    object_path: str = "/com/rdkcentral/DSM"
    call_timeout: float = 30.0  # seconds a method call waits for the daemon's loop

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> DbusConfig:
        """Build from the configuration section; ValueError on unknown keys, wrong types or values."""
        return build_section(cls, section, "bus.dbus")

    def __post_init__(self) -> None:
        if self.call_timeout <= 0:
            raise Invalid("call_timeout", f"must be a positive number of seconds, not {self.call_timeout!r}")
        if self.bus not in _BUS_TYPES and not Gio.dbus_is_address(self.bus):
            raise Invalid("bus", f"must be 'system', 'session' or a D-Bus address, not {self.bus!r}")
        if not Gio.dbus_is_name(self.name) or Gio.dbus_is_unique_name(self.name):
            raise Invalid("name", f"{self.name!r} is not a well-known D-Bus name")
        if not GLib.Variant.is_object_path(self.object_path):
            raise Invalid("object_path", f"{self.object_path!r} is not a D-Bus object path")

    def address(self) -> str:
        """The bus address to connect to (may read the environment and block briefly)."""
        bus_type = _BUS_TYPES.get(self.bus)
        return self.bus if bus_type is None else Gio.dbus_address_get_for_bus_sync(bus_type, None)


class DbusProvider:
    """Serves one DataModel on D-Bus; see the module docstring."""

    name = "dbus"

    def __init__(self, dm: DataModel, config: DbusConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        dm = dm.view(Flavour.USP)  # a USP front end: no CWMP-only parameters
        self._dm = dm
        self._bridge = LoopBridge(loop, config.call_timeout)
        self._loop = loop
        self._trim = LateTrim()  # on the loop: after large replies, their memory back to the system
        self._service = DsmService(dm)
        self._interface = Gio.DBusNodeInfo.new_for_xml(INTROSPECTION).lookup_interface(INTERFACE)
        self._glib: GLibThread | None = None
        self._subscription: Subscription | None = None
        # Touched on the GLib thread only:
        self._bus: Any = None  # pydbus.bus.Bus
        self._name_owner: Any = None  # pydbus NameOwner
        self._registration = 0

    @classmethod
    def create(cls, dm: DataModel, section: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> DbusProvider:
        return cls(dm, DbusConfig.from_config(section), loop)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> DbusProvider:
        """The adapter factory (dsm_tr181/adapters.py): the section is checked first."""
        config = DbusConfig.from_config(section)
        datamodel, loop = context.serving()
        return cls(datamodel, config, loop)

    async def start(self) -> None:
        """Connect, register the object, own the name and start sending signals."""
        if self._glib is not None:
            return
        glib = GLibThread(name="dbus-provider")
        glib.start()
        try:
            await glib.call(self._open)
        except BaseException:
            await asyncio.to_thread(glib.stop)
            raise
        self._glib = glib
        self._subscription = self._dm.subscribe(self._on_notification, self._service.signal_kinds, durable=True)

    async def close(self) -> None:
        """Stop signals, release the name, unregister the object and disconnect."""
        glib, self._glib = self._glib, None
        if glib is None:
            return
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._trim.cancel()
        try:
            await glib.call(self._disconnect)
        finally:
            await asyncio.to_thread(glib.stop)

    # == on the GLib thread ======================================================================

    def _open(self) -> None:
        address = self.config.address()
        try:
            bus = pydbus.connect(address)
        except GLib.Error as exc:
            raise ConnectionError(f"D-Bus provider: cannot connect to {address}: {exc.message}") from exc
        try:
            self._registration = bus.con.register_object(
                self.config.object_path, self._interface, self._on_call, None, None
            )
            self._name_owner = bus.request_name(self.config.name, allow_replacement=False)
        except (GLib.Error, RuntimeError) as exc:
            bus.con.close_sync(None)
            reason = exc.message if isinstance(exc, GLib.Error) else str(exc)
            raise ConnectionError(f"D-Bus provider: cannot serve {self.config.name} on {address}: {reason}") from exc
        self._bus = bus

    def _disconnect(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        bus.con.unregister_object(self._registration)
        try:
            self._name_owner.unown()
        except GLib.Error as exc:  # e.g. the bus went away first: then nothing is left to release
            _log.warning("D-Bus provider: releasing %s: %s", self.config.name, exc.message)
        if not bus.con.is_closed():
            bus.con.close_sync(None)

    def _on_call(
        self,
        connection: Gio.DBusConnection,
        sender: str,
        object_path: str,
        interface_name: str,
        method_name: str,
        parameters: GLib.Variant,
        invocation: Gio.DBusMethodInvocation,
    ) -> None:
        """Gio's method handler: Gio has checked the method name and the signature."""
        try:
            args = from_arguments(parameters)
            if self._service.reads(method_name):
                reply = self._bridge.call_async(self._service.read, method_name, args)
            else:
                reply = self._bridge.call(self._service.call, method_name, args)
            if callable(reply):
                reply = reply()
        except Fault as fault:
            invocation.return_dbus_error(error_name(fault.code), fault_text(fault))
        except Exception:
            _log.exception("%s from %s failed", method_name, sender)
            invocation.return_dbus_error(INTERNAL_ERROR, internal_error_text())
        else:
            invocation.return_value(reply)
            if reply.get_size() >= LARGE:
                self._loop.call_soon_threadsafe(self._trim.after_large_work)

    def _emit(self, signal: str, arguments: GLib.Variant) -> None:
        if self._bus is not None:
            self._bus.con.emit_signal(None, self.config.object_path, INTERFACE, signal, arguments)

    # == on the loop =============================================================================

    def _on_notification(self, note: Notification) -> None:
        signal, arguments = self._service.signal(note)
        glib = self._glib
        if glib is not None:
            glib.invoke(lambda: self._emit(signal, arguments))
