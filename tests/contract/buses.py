"""The bus front ends the bus contract runs against, each seen by a client of its own protocol.

Every client speaks its bus's wire protocol from the test's thread while the provider serves
the data model on the daemon's loop (a LoopThread): D-Bus through a separate GDBus client
connection to a private dbus-daemon, the control socket through ControlClient. Answers come
back as TR-106 text, faults as :class:`BusFault` with the numeric code the bus carried, and
notifications as :class:`Seen` records, so that one suite can state the contract once.
"""

from __future__ import annotations

import contextlib
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from dsm_tr181.buses.rbus_ffi import FAULT_TO_RBUS, RbusError
from dsm_tr181.errors import FaultCode
from dsm_tr181.schema.loader import load_documents
from dsm_tr181.tree.datamodel import DataModel
from tests.support.loopthread import LoopThread

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/unit/data/test-model.xml"
BUSES = ("dbus", "control-socket", "rbus-standin", "rbus")


@dataclass(frozen=True)
class Capabilities:
    """What a front end can carry of the contract, declared per back end; the contract states
    and tests what the bus does instead where it cannot (README's front-end table cites it)."""

    fault: Callable[[FaultCode], int] = lambda code: code.usp  # the code the bus carries a fault as
    no_route: int | None = None  # the code for a name nobody registered, when not the provider's fault
    search_paths: bool = True  # [Key=="v"] unique-key and expression paths
    reference_following: bool = True  # Ref+ paths
    path_syntax: bool = True  # a malformed path is 7008, not merely a name nobody has
    partial_set: bool = True  # allow_partial: what can be applied is
    supported_dm: bool = True  # GetSupportedDM
    atomic_add: bool = True  # an add with parameters creates the row with them, or nothing
    creation_keys: bool = True  # ObjectCreation carries the row's unique keys
    request_ids: bool = True  # an asynchronous command answers a request id, completes by event
    discovery: bool = False  # the bus lists what a component registered (rbus_discoverComponentDataElements)


FULL = Capabilities()
# rbus (librbus 2.6.0): faults are rbusError_t codes (rbus_ffi.FAULT_TO_RBUS); librbus parses
# names itself (no search expressions, a malformed name is an unknown element); a set has
# no partial mode; no GetSupportedDM; rbusTable_addRow takes an alias only (a controller
# sets the rest after, as RDK's USP agent does); OBJECT_CREATED carries rowName, instNum and
# alias; a method's answer is its completion, however late.
RBUS = Capabilities(
    fault=lambda code: int(FAULT_TO_RBUS[code]),
    no_route=int(RbusError.DESTINATION_NOT_FOUND),
    search_paths=False,
    reference_following=False,
    path_syntax=False,
    partial_set=False,
    supported_dm=False,
    atomic_add=False,
    creation_keys=False,
    request_ids=False,
    discovery=True,
)


class BusFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


@dataclass(frozen=True)
class Seen:
    """One notification as a subscriber of the bus received it."""

    kind: str  # ValueChange, ObjectCreation, ObjectDeletion, Event, OperationComplete
    path: str  # the parameter, row, event or command path
    values: dict[str, str] = field(default_factory=dict)  # value / unique keys / arguments / outputs
    request_id: str = ""
    fault: int = 0


class Watch:
    """Notifications received so far; ``wait`` for one that matches."""

    def __init__(self, pump: Callable[[], None] = lambda: None) -> None:
        self.arrived: queue.Queue[Seen] = queue.Queue()
        self.seen: list[Seen] = []
        self._pump = pump

    def wait(self, kind: str, path: str, timeout: float = 10.0) -> Seen:
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.seen:
                if seen.kind == kind and seen.path == path:
                    return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} of {path} within {timeout} s; seen: {self.seen}")
            self._pump()
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.arrived.get(timeout=0.02))


class BusClient(Protocol):
    name: str

    def get(self, paths: list[str]) -> dict[str, str]: ...

    def set(self, values: dict[str, str], allow_partial: bool = False) -> dict[str, str]: ...

    def add(self, table: str, params: dict[str, str]) -> str: ...

    def delete(self, paths: list[str]) -> list[str]: ...

    def operate(self, command: str, args: dict[str, str]) -> tuple[str, dict[str, str]]:
        """(request id, "" for a synchronous command; its outputs, {} for an asynchronous one)."""
        ...

    def instances(self, path: str) -> list[str]: ...

    def supported(self, path: str) -> dict[str, list[str]]:
        """Supported object path -> its parameter and command names."""
        ...

    def watch(self) -> Any:
        """A context manager yielding a :class:`Watch` subscribed to every notification."""
        ...


def text(value: Any) -> str:
    """A typed value as TR-106 text (the types the contract model uses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(text(item) for item in value)
    return str(value)


# == D-Bus ==========================================================================================


class DbusClient:
    name = "dbus"

    def __init__(self, address: str, service: str) -> None:
        from gi.repository import Gio

        flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
        self._connection = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
        self._service = service

    def close(self) -> None:
        self._connection.close_sync(None)

    def _call(self, method: str, signature: str, *args: Any) -> Any:
        from gi.repository import GLib

        from dsm_tr181.buses.dbus_interface import INTERFACE

        try:
            reply = self._connection.call_sync(
                self._service, "/com/rdkcentral/DSM", INTERFACE, method,
                GLib.Variant(signature, args), None, 0, 10_000, None,
            )  # fmt: skip
        except GLib.Error as exc:
            message = exc.message.split(": ", 1)[-1] if "GDBus.Error:" in exc.message else exc.message
            match = re.match(r"(\d{4}) ", message)
            if match is None:
                raise
            raise BusFault(int(match[1]), message) from None
        return reply.unpack()

    def get(self, paths: list[str]) -> dict[str, str]:
        (values,) = self._call("Get", "(as)", paths)
        return {path: text(value) for path, value in values.items()}

    def set(self, values: dict[str, str], allow_partial: bool = False) -> dict[str, str]:
        from gi.repository import GLib

        (updated,) = self._call("Set", "(a{sv}b)", {k: GLib.Variant("s", v) for k, v in values.items()}, allow_partial)
        return {path: text(value) for path, value in updated.items()}

    def add(self, table: str, params: dict[str, str]) -> str:
        from gi.repository import GLib

        path, _keys = self._call("Add", "(sa{sv})", table, {k: GLib.Variant("s", v) for k, v in params.items()})
        return str(path)

    def delete(self, paths: list[str]) -> list[str]:
        (deleted,) = self._call("Delete", "(as)", paths)
        return list(deleted)

    def operate(self, command: str, args: dict[str, str]) -> tuple[str, dict[str, str]]:
        from gi.repository import GLib

        request_id, output = self._call(
            "Operate", "(sa{sv})", command, {k: GLib.Variant("s", v) for k, v in args.items()}
        )
        return str(request_id), {name: text(value) for name, value in output.items()}

    def instances(self, path: str) -> list[str]:
        (found,) = self._call("GetInstances", "(asb)", [path], False)
        return [row for row, _keys in found]

    def supported(self, path: str) -> dict[str, list[str]]:
        import json

        (document,) = self._call("GetSupportedDM", "(asb)", [path], False)
        objects = json.loads(document)
        return _supported_names(objects)

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        from gi.repository import Gio, GLib

        from dsm_tr181.buses.dbus_interface import INTERFACE

        context = GLib.MainContext.new()
        watch = Watch(lambda: _drain(context))

        def on_signal(_conn: Any, _sender: str, _path: str, _iface: str, member: str, params: Any) -> None:
            args = params.unpack()
            if member == "ValueChange":
                watch.arrived.put(Seen(member, args[0], {"value": text(args[1])}))
            elif member in ("ObjectCreation", "Event"):
                watch.arrived.put(Seen(member, args[0], {k: text(v) for k, v in args[1].items()}))
            elif member == "ObjectDeletion":
                watch.arrived.put(Seen(member, args[0]))
            elif member == "OperationComplete":
                request_id, command, output, fault, _fault_string = args
                watch.arrived.put(Seen(member, command, {k: text(v) for k, v in output.items()}, request_id, fault))

        context.push_thread_default()
        try:
            subscription = self._connection.signal_subscribe(
                None, INTERFACE, None, "/com/rdkcentral/DSM", None, Gio.DBusSignalFlags.NONE, on_signal
            )
        finally:
            context.pop_thread_default()
        # A match rule is in force once the bus has answered a later call of ours.
        self._connection.call_sync(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.Peer", "Ping",
            None, None, 0, -1, None,
        )  # fmt: skip
        try:
            yield watch
        finally:
            self._connection.signal_unsubscribe(subscription)


def _drain(context: Any) -> None:
    while context.pending():
        context.iteration(False)


# == control socket =================================================================================


class ControlSocketClient:
    name = "control-socket"

    def __init__(self, path: Path) -> None:
        from dsm_tr181.control_client import ControlClient

        self._path = path
        self._client = ControlClient(str(path), timeout=10)

    def close(self) -> None:
        pass

    def _call(self, method: str, params: Mapping[str, Any]) -> Any:
        from dsm_tr181.control_client import DaemonError

        try:
            return self._client.call(method, params)
        except DaemonError as exc:
            if not exc.fault:
                raise
            raise BusFault(int(exc.fault["code"]), str(exc)) from None

    def get(self, paths: list[str]) -> dict[str, str]:
        return dict(self._call("get", {"paths": paths}))

    def set(self, values: dict[str, str], allow_partial: bool = False) -> dict[str, str]:
        result = self._call("set", {"values": values, "allow_partial": allow_partial})
        if result["errors"] and not allow_partial:
            raise AssertionError(f"errors without allow_partial: {result}")
        return dict(result["updated"])

    def add(self, table: str, params: dict[str, str]) -> str:
        (added,) = self._call("add", {"path": table, "params": params})
        return str(added["path"])

    def delete(self, paths: list[str]) -> list[str]:
        return list(self._call("delete", {"paths": paths})["deleted"])

    def operate(self, command: str, args: dict[str, str]) -> tuple[str, dict[str, str]]:
        result = self._call("operate", {"command": command, "args": args})
        if "request_id" in result and "command" in result:
            return str(result["request_id"]), {}
        return "", {name: text(value) for name, value in result.items()}

    def instances(self, path: str) -> list[str]:
        return [row["path"] for row in self._call("instances", {"paths": [path]})]

    def supported(self, path: str) -> dict[str, list[str]]:
        return _supported_names(self._call("supported", {"paths": [path]}))

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        import json
        import socket

        from dsm_tr181.control_client import encode_frame, read_frame

        watch = Watch()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self._path))
        sock.sendall(encode_frame({"method": "events", "id": 1, "params": {"prefix": ""}}))
        assert json.loads(read_frame(sock) or b"null") == {"id": 1, "result": {"subscribed": ""}}
        sock.settimeout(None)

        def follow() -> None:
            with contextlib.suppress(OSError):
                while (frame := read_frame(sock)) is not None:
                    watch.arrived.put(_seen_from_json(json.loads(frame)["event"]))

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        try:
            yield watch
        finally:
            sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end; the daemon drops the subscription
            thread.join(5)
            sock.close()


def _seen_from_json(event: Mapping[str, Any]) -> Seen:
    fault = int(event["fault"]["code"]) if event.get("fault") else 0
    values = {"value": text(event["value"])} if "value" in event else {k: text(v) for k, v in event["args"].items()}
    return Seen(event["kind"], event["path"], values, event.get("request_id") or "", fault)


def _supported_names(found: Any) -> dict[str, list[str]]:
    """{requested path: [objects]} (control socket) or GetSupportedDMResp (D-Bus) -> object -> names."""
    names: dict[str, list[str]] = {}
    if isinstance(found, dict) and "req_obj_results" in found:
        for result in found["req_obj_results"]:
            for obj in result["supported_objs"]:
                items = [p["param_name"] for p in obj["supported_params"]]
                items += [c["command_name"] for c in obj["supported_commands"]]
                names[obj["supported_obj_path"]] = sorted(items)
        return names
    for objects in found.values():
        for obj in objects:
            names[obj["path"]] = sorted([p["name"] for p in obj["params"]] + [c["name"] for c in obj["commands"]])
    return names


# == rbus ==========================================================================================


class RbusClient:
    """A consumer on rbus: rbus_getExt, rbus_setMulti, rbusTable_addRow/removeRow/getRowNames,
    rbusMethod_Invoke(Async) and rbusEvent_Subscribe, through :class:`Consumer` of the librbus
    stand-in (tests/support/rbus_standin.py). Values travel typed: a set sends each value
    as the type rbus reports for the parameter (a get first), a string when it is not
    of that type; method arguments go as strings."""

    name = "rbus"

    def __init__(self, consumer: Any, dm: DataModel) -> None:
        self._consumer = consumer
        self._schema = dm.schema
        self._ids = 0

    def close(self) -> None:
        pass

    @staticmethod
    def _check(code: int) -> None:
        if code != 0:
            from dsm_tr181.buses.rbus_ffi import RbusError

            raise BusFault(code, RbusError(code).name)

    def get(self, paths: list[str]) -> dict[str, str]:
        code, values = self._consumer.get(paths)
        self._check(code)
        return {name: _rbus_text(vtype, value) for name, (vtype, value) in values.items()}

    def set(self, values: dict[str, str], allow_partial: bool = False) -> dict[str, str]:
        assert not allow_partial, "rbus has no partial set (Capabilities.partial_set)"
        typed = {}
        for path, value in values.items():
            code, current = self._consumer.get([path])
            self._check(code)
            typed[path] = _rbus_value(current[path][0], value)
        self._check(self._consumer.set(typed))
        return self.get(list(values))

    def add(self, table: str, params: dict[str, str]) -> str:
        rest = dict(params)
        code, instance = self._consumer.add_row(table, rest.pop("Alias", None))
        self._check(code)
        row = f"{table}{instance}."
        try:
            if rest:
                self.set({row + name: value for name, value in rest.items()})
        except BusFault:
            self._consumer.remove_row(row)  # what a controller does when the sets fail
            raise
        return row

    def delete(self, paths: list[str]) -> list[str]:
        for path in paths:
            self._check(self._consumer.remove_row(path))
        return paths

    def operate(self, command: str, args: dict[str, str]) -> tuple[str, dict[str, str]]:
        from dsm_tr181.buses.rbus_ffi import ValueType

        code, outputs = self._consumer.invoke(command, {k: (ValueType.STRING, v) for k, v in args.items()})
        if code != 0:
            raise BusFault(code, str(outputs.get("error_string", (0, ""))[1]))
        return "", {name: _rbus_text(vtype, value) for name, (vtype, value) in outputs.items()}

    def operate_later(self, command: str, args: dict[str, str], watch: Watch) -> str:
        """rbusMethod_InvokeAsync: the answer arrives as an OperationComplete in ``watch``."""
        from dsm_tr181.buses.rbus_ffi import ValueType

        self._ids += 1
        request_id = f"rbus-{self._ids}"

        def done(code: int, outputs: dict[str, Any]) -> None:
            values = {name: _rbus_text(vtype, value) for name, (vtype, value) in outputs.items()}
            watch.arrived.put(Seen("OperationComplete", command, values, request_id, code))

        self._consumer.invoke_async(command, {k: (ValueType.STRING, v) for k, v in args.items()}, done)
        return request_id

    def instances(self, path: str) -> list[str]:
        code, rows = self._consumer.row_names(path)
        self._check(code)
        return [f"{path}{instance}." for instance, _alias in rows]

    def supported(self, path: str) -> dict[str, list[str]]:
        raise AssertionError("rbus has no GetSupportedDM (Capabilities.supported_dm)")

    def published(self) -> list[str]:
        """What the provider's component registered, as a discovery of it lists."""
        return list(self._consumer.published("dsm-tr181"))

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Subscribed to every event element, every table (row events) and, by wildcard,
        every property (value changes): what a controller following everything asks for."""
        from dsm_tr181.buses.rbus_ffi import EventType

        watch = Watch()
        kinds = {EventType.VALUE_CHANGED: "ValueChange", EventType.OBJECT_CREATED: "ObjectCreation",
                 EventType.OBJECT_DELETED: "ObjectDeletion", EventType.GENERAL: "Event"}  # fmt: skip

        def received(event: Any) -> None:
            kind = kinds[event.type]
            data = {name: _rbus_text(0, value) for name, value in event.data.items()}
            if kind == "ValueChange":
                watch.arrived.put(Seen(kind, event.name, {"value": data["value"]}))
            elif kind in ("ObjectCreation", "ObjectDeletion"):
                watch.arrived.put(Seen(kind, data["rowName"] + ".", data))
            else:
                watch.arrived.put(Seen(kind, event.name, data))

        names = []  # from the served model: tables without a row in their path, events, every parameter
        for obj in self._schema.objects.values():
            if obj.multi_instance and obj.path.count("{i}") == 1:
                names.append(obj.path.removesuffix("{i}."))
            names += [obj.path + event for event in obj.events]
            names += [(obj.path + parameter).replace("{i}", "*") for parameter in obj.parameters]
        for name in names:
            self._check(self._consumer.subscribe(name, received))
        try:
            yield watch
        finally:
            for name in dict.fromkeys(names):
                self._consumer.unsubscribe(name)


def _rbus_value(vtype: int, text_value: str) -> tuple[int, Any]:
    """``text_value`` as a value of the rbus type ``vtype``, else as the string it is."""
    from dsm_tr181.buses.rbus_ffi import ValueType

    try:
        if vtype == ValueType.BOOLEAN and text_value in ("true", "false", "1", "0"):
            return vtype, text_value in ("true", "1")
        if vtype in (ValueType.INT32, ValueType.UINT32, ValueType.INT64, ValueType.UINT64):
            return vtype, int(text_value)
    except ValueError:
        pass
    return ValueType.STRING, text_value


def _rbus_text(vtype: int, value: Any) -> str:
    """A value as a consumer prints it: TR-106 text (datetimes arrive as rbusDateTime_t)."""
    from dsm_tr181.buses._rbus_cffi import ffi
    from dsm_tr181.buses.rbus_ffi import _from_datetime
    from dsm_tr181.schema.types import format_datetime

    if isinstance(value, ffi.CData):
        return format_datetime(_from_datetime(value))
    if isinstance(value, datetime):
        return format_datetime(value)
    return text(value)


# == fixtures =======================================================================================


@dataclass
class Served:
    dm: DataModel
    loop: LoopThread
    client: Any
    caps: Capabilities = FULL
    synced: Callable[[], None] = lambda: None  # the bus shows every tree change made so far

    def fault(self, code: FaultCode) -> int:
        """The code this bus carries ``code`` as."""
        return self.caps.fault(code)

    def unknown(self, code: FaultCode) -> int:
        """The code for a name no provider registered: the bus's own (rbus: the broker's
        DESTINATION_NOT_FOUND), else ``code`` as the provider answers it."""
        return self.caps.no_route if self.caps.no_route is not None else self.fault(code)


@pytest.fixture(scope="module")
def contract_loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@contextmanager
def _serve_dbus(dm: DataModel, loop: LoopThread) -> Iterator[Any]:
    missing = [tool for tool in ("dbus-daemon",) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    from dsm_tr181.buses.dbus import DbusProvider
    from tests.support.dbusdaemon import private_bus

    with private_bus() as bus:
        provider = DbusProvider.create(dm, {"bus": bus.address, "name": "com.rdkcentral.DSMContract"}, loop.loop)
        loop.wait(provider.start())
        client = DbusClient(bus.address, "com.rdkcentral.DSMContract")
        try:
            yield client, lambda: None
        finally:
            client.close()
            loop.wait(provider.close())


@contextmanager
def _serve_control_socket(dm: DataModel, loop: LoopThread, directory: Path) -> Iterator[Any]:
    from dsm_tr181.buses.control_socket import ControlServer

    server = ControlServer(dm, directory / "dsm.sock")
    loop.wait(server.start())
    try:
        yield ControlSocketClient(directory / "dsm.sock"), lambda: None
    finally:
        loop.wait(server.close())


@contextmanager
def _serve_rbus_standin(dm: DataModel, loop: LoopThread) -> Iterator[Any]:
    from dsm_tr181.buses import rbus_ffi
    from dsm_tr181.buses.rbus import RbusProvider
    from tests.support.rbus_standin import Consumer, StandInBus

    bus = StandInBus()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rbus_ffi, "load", lambda path: rbus_ffi.Rbus(bus.lib))
        provider = RbusProvider.create(dm, {"watchdog_interval": 0}, loop.loop)
        loop.wait(provider.start())
        try:
            yield RbusClient(Consumer(bus), dm), lambda: loop.wait(provider.synced())
        finally:
            loop.wait(provider.close())


@contextmanager
def _serve_rbus(dm: DataModel, loop: LoopThread) -> Iterator[Any]:
    """The real librbus and rtrouted (DSM_RBUS_LIBRARY, DSM_RTROUTED): run inside a private
    mount namespace with a private /tmp, rtrouted's socket being /tmp/rtrouted."""
    from dsm_tr181.buses.rbus import RbusProvider
    from tests.support.rbus_consumer import RealConsumer
    from tests.support.rtrouted import find_tools, running_broker

    tools = find_tools()
    if isinstance(tools, str):
        pytest.skip(tools)
    with running_broker(tools):
        provider = RbusProvider.create(dm, {"library": str(tools.library), "watchdog_interval": 0}, loop.loop)
        loop.wait(provider.start())
        consumer = RealConsumer(tools.library)
        try:
            yield RbusClient(consumer, dm), lambda: loop.wait(provider.synced())
        finally:
            consumer.close()
            loop.wait(provider.close())


@pytest.fixture(params=[pytest.param(bus, marks=pytest.mark.rbus) if bus == "rbus" else bus for bus in BUSES])
def served(
    request: pytest.FixtureRequest, contract_loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A fresh test model (tests/unit/data/test-model.xml) served on one bus."""
    dm = contract_loop.call(lambda: DataModel(load_documents([MODEL])))
    serve = {
        "dbus": lambda: _serve_dbus(dm, contract_loop),
        "control-socket": lambda: _serve_control_socket(dm, contract_loop, tmp_path_factory.mktemp("ctl")),
        "rbus-standin": lambda: _serve_rbus_standin(dm, contract_loop),
        "rbus": lambda: _serve_rbus(dm, contract_loop),
    }[request.param]()
    with serve as (client, synced):
        yield Served(dm, contract_loop, client, RBUS if request.param.startswith("rbus") else FULL, synced)
