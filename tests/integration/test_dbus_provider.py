"""DbusProvider on a private dbus-daemon, driven from separate client processes.

The provider serves a DataModel from an asyncio loop running in a thread of this
process (the daemon's loop). Every method call comes from another process — ``gdbus
call``, ``dbus-send`` or ``busctl`` — and signals are watched by ``gdbus monitor``.
Commands are answered by handlers standing in for the LCM (``lcm_standin_*``).
The system-bus policy file is checked on a dbus-daemon of its own whose configuration
includes it, with clients running under other uids. What every bus does alike (the faults a
Set gets, rows, commands, notifications) is tests/contract/test_bus_contract.py; this module
keeps D-Bus's own: typing, error names, GetBulk, the policy, other processes as clients.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("gi", reason="PyGObject (gi) is not installed")
pytest.importorskip("pydbus", reason="pydbus is not installed")

from gi.repository import Gio, GLib

from dsm_tr181.buses import memory
from dsm_tr181.buses.dbus import DbusConfig, DbusProvider
from dsm_tr181.buses.dbus_interface import INTERFACE, INTROSPECTION
from dsm_tr181.buses.dbus_variants import dictionary, from_variant, typed_entries
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema import load_schema
from dsm_tr181.schema.flavours import Flavour
from dsm_tr181.schema.loader import load_documents
from dsm_tr181.schema.types import BaseType, DataType, ListFacet, Value, format_datetime
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from tests.support.dbusdaemon import gdbus_call, private_bus, read_ready_line
from tests.support.loopthread import LoopThread
from tests.support.processes import stop_process

_MISSING = [tool for tool in ("dbus-daemon", "gdbus") if shutil.which(tool) is None]
pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(_MISSING), reason=f"missing {', '.join(_MISSING)}")]

ROOT = Path(__file__).resolve().parents[2]
NAME = "com.rdkcentral.DSM"
PATH = "/com/rdkcentral/DSM"
TEST_NAME = "com.rdkcentral.DSMTest"  # the unit-test model, served beside the real one
SM = "Device.SoftwareModules."
EU = SM + "ExecutionUnit."
EE_REF = SM + "ExecEnv.1"
CREATED = "2024-05-06T07:08:09Z"

# The documented mapping, written out independently of dbus_variants.
SIGNATURES = {
    BaseType.STRING: "s",
    BaseType.BOOLEAN: "b",
    BaseType.INT: "i",
    BaseType.UNSIGNED_INT: "u",
    BaseType.LONG: "x",
    BaseType.UNSIGNED_LONG: "t",
    BaseType.DATETIME: "s",
    BaseType.BASE64: "ay",
    BaseType.HEX_BINARY: "ay",
}

T = TypeVar("T")


# == the daemon's side ==============================================================================


def lcm_standin_set_requested_state(dm: DataModel) -> Callable[[CommandCall], dict[str, Value]]:
    """Stands in for the LCM's synchronous ExecutionUnit.{i}.SetRequestedState()."""

    def handle(call: CommandCall) -> dict[str, Value]:
        dm.update(call.node, {"RequestedState": call.args["RequestedState"]})
        return {}

    return handle


def lcm_standin_install_du(dm: DataModel) -> Callable[[CommandCall], Awaitable[dict[str, Value]]]:
    """Stands in for the LCM's asynchronous InstallDU(): a DU row appears after a short delay;
    a URL containing "unreachable" fails as the LCM reports a failed download."""

    async def handle(call: CommandCall) -> dict[str, Value]:
        await asyncio.sleep(0.2)
        url = str(call.args["URL"])
        if "unreachable" in url:
            raise Fault(FaultCode.SERVER_UNREACHABLE, f"cannot reach {url}")
        du_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, url))
        dm.add_row(SM + "DeploymentUnit.", {"UUID": du_uuid, "URL": url, "Version": "1.0", "ExecutionEnvRef": EE_REF})
        return {"UUID": du_uuid, "Version": "1.0", "ExecEnvRef": EE_REF}

    return handle


def softwaremodules() -> DataModel:
    """The real model with an ExecEnv, two EUs, a DU and the LCM stand-ins."""
    dm = DataModel(load_schema())
    ee = dm.add_row(
        SM + "ExecEnv.",
        {"Name": "default", "Enable": True, "Status": "Up", "Type": "OCI", "CreatedAt": CREATED,
         "AllocatedMemory": -1, "InitialRunLevel": 3},
    )  # fmt: skip
    eus = [dm.add_row(EU, {"EUID": f"eu-{i}", "Name": f"app{i}", "ExecutionEnvRef": ee.ref}).ref for i in (1, 2)]
    dm.add_row(
        SM + "DeploymentUnit.",
        {"UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "du1")), "DUID": "du1", "ExecutionEnvRef": ee.ref,
         "ExecutionUnitList": tuple(eus), "Resolved": True},
    )  # fmt: skip
    dm.on_command(EU + "{i}.SetRequestedState()", lcm_standin_set_requested_state(dm))
    dm.on_command(SM + "InstallDU()", lcm_standin_install_du(dm))
    return dm


@dataclass
class Served:
    address: str
    dm: DataModel
    loop: LoopThread
    name: str = NAME

    def call(self, method: str, *args: str) -> GLib.Variant:
        """``gdbus call`` of ``method``; the printed reply parsed back into a GVariant."""
        return call(self.address, self.name, method, *args)

    def error(self, method: str, *args: str) -> tuple[str, str]:
        return call_error(self.address, self.name, method, *args)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def bus_address() -> Iterator[str]:
    with private_bus() as bus:
        yield bus.address


@contextmanager
def serving(dm: DataModel, loop: LoopThread, section: dict[str, Any]) -> Iterator[DbusProvider]:
    provider = DbusProvider.create(dm, section, loop.loop)
    loop.wait(provider.start())
    try:
        yield provider
    finally:
        loop.wait(provider.close())


@pytest.fixture(scope="module")
def served(bus_address: str, loop: LoopThread) -> Iterator[Served]:
    dm = loop.call(softwaremodules)
    with serving(dm, loop, {"bus": bus_address, "call_timeout": 10}):
        yield Served(bus_address, dm, loop)


@pytest.fixture(scope="module")
def test_model(bus_address: str, loop: LoopThread) -> Iterator[Served]:
    """tests/unit/data/test-model.xml: every TR-106 type, hidden values, a creatable table."""
    dm = loop.call(lambda: DataModel(load_documents([ROOT / "tests/unit/data/test-model.xml"])))
    with serving(dm, loop, {"bus": bus_address, "name": TEST_NAME}):
        yield Served(bus_address, dm, loop, TEST_NAME)


# == the clients' side ==============================================================================


def call(address: str, name: str, method: str, *args: str) -> GLib.Variant:
    return GLib.Variant.parse(None, gdbus_call(address, name, PATH, f"{INTERFACE}.{method}", *args), None, None)


def call_error(address: str, name: str, method: str, *args: str) -> tuple[str, str]:
    """The D-Bus error name and message a failing ``gdbus call`` reports."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        gdbus_call(address, name, PATH, f"{INTERFACE}.{method}", *args)
    match = re.search(r"GDBus\.Error:([\w.]+): (.*)", failed.value.stderr)
    assert match, failed.value.stderr
    return match[1], match[2]


def entries(variant: GLib.Variant) -> dict[str, GLib.Variant]:
    """An ``a{sv}`` as key -> the value inside its variant (types kept)."""
    pairs = (variant.get_child_value(i) for i in range(variant.n_children()))
    return {p.get_child_value(0).get_string(): p.get_child_value(1).get_variant() for p in pairs}


def strings(paths: list[str]) -> str:
    """``as`` in GVariant text (search paths hold quotes)."""
    return GLib.Variant("as", paths).print_(False)


def bulk(served: Served, paths: list[str], max_depth: int = 0) -> dict[str, dict[str, str]]:
    """GetBulk's JSON document, decoded."""
    document: dict[str, dict[str, str]] = json.loads(served.call("GetBulk", strings(paths), str(max_depth))[0])
    return document


def flat(document: dict[str, dict[str, str]]) -> dict[str, str]:
    return {obj + name: text for obj, params in document.items() for name, text in params.items()}


def get_as_text(served: Served, paths: list[str]) -> dict[str, str]:
    """Get's answer, each typed value in its TR-106 text as the DataModel writes it."""
    got = entries(served.call("Get", strings(paths)).get_child_value(0))
    return served.loop.call(lambda: {path: served.dm.text(path, from_variant(v)) for path, v in got.items()})


def expected(data_type: DataType, value: Value) -> GLib.Variant:
    """``value`` as the documented mapping says it travels, built the plain GLib way."""
    item = SIGNATURES[data_type.base]

    def plain(scalar: Any) -> Any:
        return format_datetime(scalar) if data_type.base is BaseType.DATETIME else scalar

    if data_type.list is not None:
        return GLib.Variant("a" + item, [plain(v) for v in value])  # type: ignore[union-attr]
    return GLib.Variant(item, plain(value))


class SignalWatch:
    """``gdbus monitor`` of one name's signals, in another process.

    gdbus monitor prints "The name … is owned by …" and only then subscribes, so a signal
    sent right after that line may be missed: the watch is ready once a probe has come
    through, a DUStateChange! event (``probe(marker)`` publishes it) that changes nothing.
    """

    def __init__(self, address: str, name: str, probe: Callable[[str], None], **popen: Any) -> None:
        # By its owner's unique name: GDBus drops the signals of a well-known name until it
        # has learnt the name's owner.
        owner = GLib.Variant.parse(
            None,
            gdbus_call(
                address, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.GetNameOwner", name
            ),
            None,
            None,
        )[0]
        self._process = subprocess.Popen(
            ["gdbus", "monitor", "--address", address, "--dest", owner],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, **popen,
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[tuple[str, GLib.Variant]] = []
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._next_line(lambda line: line.startswith(f"The name {owner} is owned by"), 10.0)
            self._await_probe(probe)
        except BaseException:
            stop_process(self._process)
            raise

    def wait_for(self, member: str, match: Callable[[GLib.Variant], bool] = lambda _: True) -> GLib.Variant:
        """The arguments of the first signal ``member`` (received so far or within 10 s) that ``match``es."""
        found = self._find(lambda seen, args: seen == member and match(args), 10.0)
        if found is None:
            raise AssertionError(f"gdbus monitor: no {member} signal within the timeout")
        return found

    def stop(self) -> None:
        stop_process(self._process)

    def _await_probe(self, probe: Callable[[str], None]) -> None:
        for attempt in range(50):
            marker = f"probe-{attempt}"
            probe(marker)
            if self._find(lambda member, args, sent=marker: member == "Event" and args[1].get("Version") == sent, 0.2):
                # One sender's signals arrive in order: whatever came before is stale.
                self._seen.clear()
                return
        raise AssertionError("gdbus monitor: no probe came through")

    def _find(self, match: Callable[[str, GLib.Variant], bool], timeout: float) -> GLib.Variant | None:
        deadline = time.monotonic() + timeout
        while True:
            for member, args in self._seen:
                if match(member, args):
                    return args
            line = self._next_line(lambda line: line.startswith(f"{PATH}: "), deadline - time.monotonic())
            if line is None:
                return None
            signal, _, text = line.removeprefix(f"{PATH}: ").partition(" ")
            self._seen.append((signal.removeprefix(INTERFACE + "."), GLib.Variant.parse(None, text, None, None)))

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))

    def _next_line(self, wanted: Callable[[str], bool], timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if wanted(line):
                return line


def prober(dm: DataModel, loop: LoopThread) -> Callable[[str], None]:
    """Publishes the probe a SignalWatch waits for."""
    return lambda marker: loop.call(lambda: dm.emit_event(SM + "DUStateChange!", {"Version": marker}))


@contextmanager
def watching(address: str, probe: Callable[[str], None], name: str = NAME, **popen: Any) -> Iterator[SignalWatch]:
    watch = SignalWatch(address, name, probe, **popen)
    try:
        yield watch
    finally:
        watch.stop()


# == interface ======================================================================================


def test_integration_xml_is_the_published_interface(served: Served) -> None:
    assert (ROOT / "integration/com.rdkcentral.DSM.xml").read_text() == INTROSPECTION
    text = gdbus_call(served.address, NAME, PATH, "org.freedesktop.DBus.Introspectable.Introspect")
    on_wire = Gio.DBusNodeInfo.new_for_xml(GLib.Variant.parse(None, text, None, None)[0]).lookup_interface(INTERFACE)
    shipped = Gio.DBusNodeInfo.new_for_xml(INTROSPECTION).lookup_interface(INTERFACE)

    def shape(info: Gio.DBusInterfaceInfo) -> dict[str, list[tuple[str, str]]]:
        methods = {m.name: [(a.name, a.signature) for a in [*m.in_args, *m.out_args]] for m in info.methods}
        return methods | {s.name + "!": [(a.name, a.signature) for a in s.args] for s in info.signals}

    assert shape(on_wire) == shape(shipped)


# == Get and the other reads ========================================================================


def test_get_one_parameter_is_typed(served: Served) -> None:
    values = entries(served.call("Get", f"['{EU}1.AutoStart', '{SM}ExecEnv.1.InitialRunLevel']").get_child_value(0))
    assert values[EU + "1.AutoStart"].get_type_string() == "b"
    assert values[SM + "ExecEnv.1.InitialRunLevel"].get_type_string() == "u"
    assert values[SM + "ExecEnv.1.InitialRunLevel"].unpack() == 3


def test_get_partial_path_returns_every_value_typed(served: Served) -> None:
    def snapshot() -> dict[str, tuple[DataType, Value]]:
        [result] = served.dm.view(Flavour.USP).get([SM])  # D-Bus serves USP: no CWMP-only parameter
        return {o.path + n: (o.schema.parameters[n].type, v) for o in result.resolved for n, v in o.params.items()}

    want = served.loop.call(snapshot)
    got = entries(served.call("Get", f"['{SM}']").get_child_value(0))
    assert list(got) == list(want)  # same parameters, in tree order
    for path, (data_type, value) in want.items():
        assert got[path].equal(expected(data_type, value)), (path, got[path], value)
    assert got[SM + "ExecEnv.1.CreatedAt"].unpack() == CREATED
    assert got[SM + "ExecEnv.1.AllocatedMemory"].get_type_string() == "i"
    assert got[SM + "DeploymentUnit.1.ExecutionUnitList"].unpack() == [EU + "1", EU + "2"]


def test_get_from_busctl_is_typed(served: Served) -> None:
    if shutil.which("busctl") is None:
        pytest.skip("busctl is missing")
    done = subprocess.run(
        ["busctl", f"--address={served.address}", "--json=short", "call", NAME, PATH, INTERFACE,
         "Get", "as", "1", SM + "ExecutionUnitNumberOfEntries"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    count = served.loop.call(lambda: served.dm.value(SM + "ExecutionUnitNumberOfEntries"))
    assert json.loads(done.stdout) == {
        "type": "a{sv}",
        "data": [{SM + "ExecutionUnitNumberOfEntries": {"type": "u", "data": count}}],
    }


def test_malformed_path_is_invalid_path_syntax_on_the_wire(served: Served) -> None:
    assert served.error("Get", "['Device..SoftwareModules.']")[0] == "com.rdkcentral.DSM.Error.InvalidPathSyntax"
    # dbus-send prints the error name exactly as received
    done = subprocess.run(
        ["dbus-send", "--session", "--print-reply", f"--dest={NAME}", PATH, f"{INTERFACE}.Get",
         "array:string:Device..SoftwareModules."],
        capture_output=True, text=True, timeout=10, env={"DBUS_SESSION_BUS_ADDRESS": served.address},
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.startswith("Error com.rdkcentral.DSM.Error.InvalidPathSyntax: 7008 Invalid path syntax: ")


def test_unknown_path_is_invalid_path(served: Served) -> None:
    name, message = served.error("Get", f"['{SM}NoSuchThing']")
    assert name == "com.rdkcentral.DSM.Error.InvalidPath"
    assert message.startswith("7026 Invalid path: ")


def test_get_names(served: Served) -> None:
    top = served.call("GetNames", f"'{SM}'", "true").unpack()[0]
    assert top[SM + "ExecutionUnitNumberOfEntries"] is False
    assert top[EU] is False  # a table a controller cannot add to
    assert EU + "1." not in top
    rows = served.call("GetNames", f"'{EU}'", "true").unpack()[0]
    assert set(rows) >= {EU + "1.", EU + "2."}
    below = served.call("GetNames", f"'{EU}1.'", "false").unpack()[0]
    assert below[EU + "1."] is False
    assert below[EU + "1.AutoStart"] is True
    assert below[EU + "1.Name"] is False
    assert below[EU + "1.AutoRestart."] is False
    assert below[EU + "1.HostObject."] is False
    assert served.call("GetNames", f"'{EU}1.RunLevel'", "false").unpack()[0] == {EU + "1.RunLevel": True}


def test_get_instances(served: Served) -> None:
    [rows] = served.call("GetInstances", f"['{EU}']", "true").unpack()
    assert (EU + "1.", {"EUID": "eu-1", "Alias": "cpe-1"}) in rows


def test_get_supported_dm_json(served: Served) -> None:
    text = served.call("GetSupportedDM", f"['{SM}']", "false").unpack()[0]
    [result] = json.loads(text)["req_obj_results"]
    assert result["req_obj_path"] == SM
    objects = {o["supported_obj_path"]: o for o in result["supported_objs"]}
    eu = objects[EU + "{i}."]
    assert eu["access"] == "OBJ_READ_ONLY"
    assert eu["is_multi_instance"] is True
    assert {"key_names": ["EUID"]} in eu["unique_key_sets"]
    params = {p["param_name"]: p for p in eu["supported_params"]}
    assert params["AutoStart"] == {
        "param_name": "AutoStart",
        "access": "PARAM_READ_WRITE",
        "value_type": "PARAM_BOOLEAN",
        "value_change": "VALUE_CHANGE_ALLOWED",
    }
    assert params["RunLevel"]["value_type"] == "PARAM_UNSIGNED_INT"
    commands = {c["command_name"]: c for c in eu["supported_commands"]}
    assert commands["SetRequestedState()"]["command_type"] == "CMD_SYNC"
    assert commands["SetRequestedState()"]["input_arg_names"] == ["RequestedState"]
    top = objects[SM]
    install = next(c for c in top["supported_commands"] if c["command_name"] == "InstallDU()")
    assert install["command_type"] == "CMD_ASYNC"
    assert install["output_arg_names"] == ["UUID", "Version", "ExecEnvRef"]
    [event] = top["supported_events"]
    assert event["event_name"] == "DUStateChange!"
    assert "Fault.FaultCode" in event["arg_names"]


# == GetBulk ========================================================================================


@pytest.mark.parametrize(
    "paths",
    [[SM], [EU + "1.AutoStart"], [EU + '[EUID=="eu-2"].'], [EU + "*.Name", SM + "ExecEnv.1."]],
    ids=["partial", "parameter", "search", "wildcard-and-object"],
)
def test_get_bulk_is_gets_values_as_text(served: Served, paths: list[str]) -> None:
    document = bulk(served, paths)
    assert flat(document) == get_as_text(served, paths)
    objects = served.loop.call(lambda: [o.path for r in served.dm.get(paths) for o in r.resolved])
    assert list(document) == list(dict.fromkeys(objects))  # grouped by object, in Get's order


def test_get_bulk_values_are_tr106_text(served: Served) -> None:
    document = bulk(served, [SM])
    ee = document[SM + "ExecEnv.1."]
    assert (ee["Enable"], ee["CreatedAt"], ee["AllocatedMemory"], ee["InitialRunLevel"]) == ("true", CREATED, "-1", "3")
    assert document[SM + "DeploymentUnit.1."]["ExecutionUnitList"] == f"{EU}1,{EU}2"
    count = served.loop.call(lambda: served.dm.value(SM + "ExecutionUnitNumberOfEntries"))
    assert document[SM]["ExecutionUnitNumberOfEntries"] == str(count)


def test_get_bulk_max_depth(served: Served) -> None:
    def objects(depth: int) -> list[str]:
        return served.loop.call(lambda: [o.path for o in served.dm.get([EU + "1."], depth)[0].resolved])

    assert list(bulk(served, [EU + "1."], 1)) == [EU + "1."] == objects(1)
    two = bulk(served, [EU + "1."], 2)
    assert list(two) == objects(2) and EU + "1.AutoRestart." in two
    assert bulk(served, [EU + "1."], 0) == bulk(served, [EU + "1."], 9)
    assert bulk(served, [EU + "1.Name"], 1) == {EU + "1.": {"Name": "app1"}}  # not for parameters


@pytest.mark.parametrize("path", ["Device..SoftwareModules.", SM + "NoSuchThing", EU + "99.", EU + "1.Nope"])
def test_get_bulk_faults_are_gets(served: Served, path: str) -> None:
    name, message = served.error("GetBulk", strings([SM, path]), "0")
    assert (name, message) == served.error("Get", strings([SM, path]))
    assert name.startswith("com.rdkcentral.DSM.Error.Invalid")


def test_get_bulk_from_busctl(served: Served) -> None:
    if shutil.which("busctl") is None:
        pytest.skip("busctl is missing")
    done = subprocess.run(
        ["busctl", f"--address={served.address}", "--json=short", "call", NAME, PATH, INTERFACE,
         "GetBulk", "asu", "1", EU + "1.Name", "0"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    reply = json.loads(done.stdout)
    assert reply["type"] == "s"
    assert json.loads(reply["data"][0]) == {EU + "1.": {"Name": "app1"}}


def many_dus(n: int) -> DataModel:
    """The real model with n DUs of 3 EUs each (bench/tree_bench.py's tree)."""
    dm = DataModel(load_schema())
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default", "Enable": True, "Status": "Up", "Type": "OCI"})
    for i in range(n):
        eus = tuple(
            dm.add_row(EU, {"EUID": f"eu-{i}-{j}", "Name": f"app{i}-{j}", "ExecutionEnvRef": ee.ref}).ref
            for j in range(3)
        )
        dm.add_row(
            SM + "DeploymentUnit.",
            {"UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"du{i}")), "DUID": f"du{i}", "Version": "1.0.0",
             "ExecutionEnvRef": ee.ref, "ExecutionUnitList": eus},
        )  # fmt: skip
    return dm


def test_get_bulk_of_1000_dus_decodes_and_its_memory_is_trimmed_after(
    bus_address: str, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply over 1 MiB is followed by one malloc_trim once replies pause; a small one by none."""
    trims: list[float] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(time.monotonic()) or True)
    dm = loop.call(lambda: many_dus(1000))
    with serving(dm, loop, {"bus": bus_address, "name": NAME + ".Large"}):
        call(bus_address, NAME + ".Large", "Get", f"['{SM}ExecEnv.1.Name']")
        time.sleep(0.5)
        assert trims == []
        text = call(bus_address, NAME + ".Large", "GetBulk", f"['{SM}']", "0")[0]
        sent = time.monotonic()
        deadline = sent + 5
        while not trims and time.monotonic() < deadline:
            time.sleep(0.05)
    document = json.loads(text)
    assert document == loop.call(lambda: {o.path: o.text() for o in dm.view(Flavour.USP).get([SM])[0].resolved})
    assert len(document) > 13_000 and sum(map(len, document.values())) > 150_000
    assert len(trims) == 1 and trims[0] >= sent


# == Set ============================================================================================


def test_set_writable_parameters_text_and_typed(served: Served) -> None:
    updated = served.call("Set", f"{{'{EU}1.AutoStart': <'true'>, '{EU}1.RunLevel': <uint32 5>}}", "false")
    assert updated.unpack() == ({EU + "1.AutoStart": True, EU + "1.RunLevel": 5},)
    assert entries(updated.get_child_value(0))[EU + "1.RunLevel"].get_type_string() == "u"
    assert served.loop.call(lambda: served.dm.value(EU + "1.AutoStart")) is True


def test_set_allow_partial_returns_what_was_applied(served: Served) -> None:
    updated = served.call("Set", f"{{'{EU}2.AutoStart': <true>, '{EU}2.Name': <'x'>}}", "true")
    assert updated.unpack() == ({EU + "2.AutoStart": True},)
    name, message = served.error("Set", f"{{'{EU}2.Name': <'x'>, '{EU}2.Status': <'Idle'>}}", "true")
    assert name.endswith(".NotWritable")
    assert f"{EU}2.Name" in message and f"{EU}2.Status" in message


# == Operate ========================================================================================


def test_operate_synchronous_command(served: Served) -> None:
    reply = served.call("Operate", f"'{EU}1.SetRequestedState()'", "{'RequestedState': <'Active'>}")
    assert reply.unpack() == ("", {})
    assert served.loop.call(lambda: served.dm.value(EU + "1.RequestedState")) == "Active"
    name, message = served.error("Operate", f"'{EU}1.SetRequestedState()'", "@a{sv} {}")
    assert name == "com.rdkcentral.DSM.Error.InvalidCommandArguments"
    assert message.startswith("7027 ")


def test_operate_unknown_object(served: Served) -> None:
    name, _ = served.error("Operate", f"'{EU}99.SetRequestedState()'", "{'RequestedState': <'Active'>}")
    assert name == "com.rdkcentral.DSM.Error.ObjectNotFound"


def test_add_and_delete_refused_in_softwaremodules(served: Served) -> None:
    assert served.error("Add", f"'{EU}'", "@a{sv} {}")[0].endswith(".NotCreatable")
    assert served.error("Delete", f"['{EU}1.']")[0].endswith(".DeleteFailure")


# == signals ========================================================================================


def test_signals_reach_another_process(served: Served) -> None:
    dm, run = served.dm, served.loop.call
    with watching(served.address, prober(dm, served.loop)) as watch:
        row = run(lambda: dm.add_row(EU, {"EUID": "eu-signals", "ExecutionEnvRef": EE_REF}))
        _, keys = watch.wait_for("ObjectCreation", lambda a: a[0] == row.path).unpack()
        assert keys == {"EUID": "eu-signals", "Alias": row.values["Alias"]}

        served.call("Set", f"{{'{row.path}RunLevel': <'7'>}}", "false")
        change = watch.wait_for("ValueChange", lambda a: a[0] == row.path + "RunLevel")
        assert change.get_child_value(1).get_variant().get_type_string() == "u"
        assert change.unpack() == (row.path + "RunLevel", 7)

        started = "2024-01-02T03:04:05Z"
        args = {"Resolved": True, "StartTime": started, "ExecutionUnitRefList": (row.ref,), "Fault.FaultCode": 0}
        run(lambda: dm.emit_event(SM + "DUStateChange!", args))
        event = watch.wait_for("Event")
        event_path, args = event.unpack()
        assert event_path == SM + "DUStateChange!"
        assert args["StartTime"] == started and args["Resolved"] is True
        assert args["ExecutionUnitRefList"] == [row.ref]
        assert entries(event.get_child_value(1))["Fault.FaultCode"].get_type_string() == "u"

        request_id, output = served.call("Operate", f"'{SM}InstallDU()'", "{'URL': <'http://repo/app.tar'>}").unpack()
        assert request_id and output == {}
        done = watch.wait_for("OperationComplete", lambda a: a[0] == request_id).unpack()
        du_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "http://repo/app.tar"))
        outputs = {"UUID": du_uuid, "Version": "1.0", "ExecEnvRef": EE_REF}
        assert done == (request_id, SM + "InstallDU()", outputs, 0, "")

        failed_id = served.call("Operate", f"'{SM}InstallDU()'", "{'URL': <'http://unreachable/x.tar'>}").unpack()[0]
        _, _, output, code, text = watch.wait_for("OperationComplete", lambda a: a[0] == failed_id).unpack()
        assert (output, code) == ({}, 7033)
        # The stand-in's Fault names no path: the signal names the command.
        assert text == f"7033 Server Unreachable: {SM}InstallDU(): cannot reach http://unreachable/x.tar"

        run(lambda: dm.delete_row(row))
        assert watch.wait_for("ObjectDeletion", lambda a: a[0] == row.path).unpack() == (row.path,)


# == every TR-106 type, Add and Delete: the unit-test model =========================================


def test_every_type_round_trips(test_model: Served) -> None:
    t = "Device.Test."
    sent = (
        f"{{'{t}Big': <uint64 18446744073709551615>, '{t}Signed': <int64 -9223372036854775808>,"
        f" '{t}Level': <-5>, '{t}When': <'2024-02-29T12:00:00.5+01:00'>, '{t}Blob': <[byte 0x00, 0x01, 0xff]>,"
        f" '{t}Mac': <'0011223344ff'>, '{t}Tags': <['x', 'y']>, '{t}Secret': <'hush'>}}"
    )
    test_model.call("Set", sent, "false")
    got = entries(test_model.call("Get", f"['{t}']").get_child_value(0))
    assert {k.removeprefix(t): v.get_type_string() for k, v in got.items()}.items() >= {
        "Big": "t", "Signed": "x", "Level": "i", "When": "s", "Blob": "ay", "Mac": "ay", "Tags": "as",
        "Busy": "b", "ItemNumberOfEntries": "u", "Secret": "s",
    }.items()  # fmt: skip
    assert got[t + "Big"].unpack() == 2**64 - 1
    assert got[t + "Signed"].unpack() == -(2**63)
    assert got[t + "When"].unpack() == "2024-02-29T11:00:00.5Z"
    assert bytes(got[t + "Blob"].unpack()) == b"\x00\x01\xff"
    assert bytes(got[t + "Mac"].unpack()) == bytes.fromhex("0011223344ff")
    assert got[t + "Tags"].unpack() == ["x", "y"]
    assert got[t + "Secret"].unpack() == ""  # hidden: read back empty
    texts = bulk(test_model, [t])[t]
    assert flat({t: texts}) == get_as_text(test_model, [t])
    assert texts.items() >= {
        "Big": "18446744073709551615", "Signed": "-9223372036854775808", "Level": "-5",
        "When": "2024-02-29T11:00:00.5Z", "Blob": "AAH/", "Mac": "0011223344ff", "Tags": "x,y", "Secret": "",
    }.items()  # fmt: skip


def test_add_and_delete_rows(test_model: Served) -> None:
    table = "'Device.Test.Item.'"
    path, keys = test_model.call("Add", table, "{'Name': <'first'>, 'Enable': <true>, 'Weight': <uint32 3>}").unpack()
    assert path.startswith("Device.Test.Item.") and keys == {"Alias": keys["Alias"], "Name": "first"}
    assert test_model.error("Add", table, "{'Name': <'first'>, 'Enable': <'1'>}")[0].endswith(".DuplicateKey")
    assert test_model.call("Delete", f"['{path}']").unpack() == ([path],)
    assert test_model.error("Delete", f"['{path}']")[0].endswith(".ObjectNotFound")


def test_serialisation_is_glibs_at_every_offset_size() -> None:
    """Entries and arrays past 255 bytes and 64 KiB take wider framing offsets."""
    text, strings = DataType(BaseType.STRING), DataType(BaseType.STRING, list=ListFacet())
    for count, length in ((1, 3), (3, 300), (40, 2000)):
        values: dict[str, Value] = {f"k{i}": "é" * length for i in range(count)}
        values["list"] = tuple("x" * length for _ in range(count))
        types = {k: strings if k == "list" else text for k in values}
        ours = dictionary(typed_entries(types, values))
        reference = GLib.Variant("a{sv}", {k: expected(types[k], v) for k, v in values.items()})
        assert ours == bytes(reference.get_data_as_bytes().get_data())


def test_strings_d_bus_cannot_carry_are_replaced(served: Served) -> None:
    def store() -> None:
        served.dm.update(EU + "2.", {"ExecutionFaultMessage": "bad\x00byte \udcff"})

    served.loop.call(store)
    got = served.call("Get", f"['{EU}2.ExecutionFaultMessage']").unpack()[0]
    assert got == {EU + "2.ExecutionFaultMessage": "bad\ufffdbyte ?"}
    assert bulk(served, [EU + "2.ExecutionFaultMessage"]) == {EU + "2.": {"ExecutionFaultMessage": "bad\ufffdbyte ?"}}
    assert bulk(served, [EU + "2."])[EU + "2."]["ExecutionFaultMessage"] == "bad\ufffdbyte ?"


def test_get_bulk_carries_any_other_string(served: Served) -> None:
    text = 'say "hi" \\u0000 \\ é ☃ 😀\n\t'  # JSON escapes, and the text of one
    served.loop.call(lambda: served.dm.update(EU + "2.", {"ExecutionFaultMessage": text}))
    assert bulk(served, [EU + "2."])[EU + "2."]["ExecutionFaultMessage"] == text
    assert bulk(served, [EU + "2.ExecutionFaultMessage"])[EU + "2."]["ExecutionFaultMessage"] == text


# == errors that are not faults, timeouts, lifecycle ================================================


def test_unexpected_error_is_internal_error_without_details(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(DataModel, "get_supported_dm", broken)  # the provider serves a view of served.dm
    name, message = served.error("GetSupportedDM", f"['{SM}']", "false")
    assert (name, message) == ("com.rdkcentral.DSM.Error.InternalError", "7003 Internal error")
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)


def test_call_timeout_when_the_loop_is_busy(served: Served) -> None:
    """A call the loop does not take within call_timeout is refused and never runs."""
    auto_start = f"{EU}1.AutoStart"
    before = served.loop.call(lambda: served.dm.get_values([auto_start]))
    flipped = "false" if before[auto_start] else "true"
    with serving(served.dm, served.loop, {"bus": served.address, "name": NAME + ".Slow", "call_timeout": 0.3}):
        served.loop.loop.call_soon_threadsafe(time.sleep, 1.0)  # blocks the loop, as a runaway handler would
        name, message = call_error(served.address, NAME + ".Slow", "Set", f"{{'{auto_start}': <{flipped}>}}", "false")
    assert name == "com.rdkcentral.DSM.Error.InternalError"
    assert message.startswith("7003 Internal error: ")
    assert served.loop.call(lambda: served.dm.get_values([auto_start])) == before


def test_start_and_close_are_idempotent_and_close_releases_the_name(served: Served) -> None:
    name = NAME + ".Lifecycle"
    provider = DbusProvider.create(served.dm, {"bus": served.address, "name": name}, served.loop.loop)
    served.loop.wait(provider.start())
    served.loop.wait(provider.start())
    assert call(served.address, name, "Get", f"['{SM}ExecEnvNumberOfEntries']").unpack()
    served.loop.wait(provider.close())
    served.loop.wait(provider.close())
    has_owner = gdbus_call(served.address, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus.NameHasOwner", name)  # fmt: skip
    assert has_owner == "(false,)"
    served.loop.wait(provider.start())  # a closed provider can serve again
    served.loop.wait(provider.close())


def test_close_after_the_bus_went_away(loop: LoopThread) -> None:
    dm = loop.call(softwaremodules)
    with private_bus() as bus:
        provider = DbusProvider.create(dm, {"bus": bus.address}, loop.loop)
        loop.wait(provider.start())
    loop.wait(provider.close())


def test_a_taken_name_fails_start(served: Served) -> None:
    provider = DbusProvider.create(served.dm, {"bus": served.address}, served.loop.loop)
    with pytest.raises(ConnectionError, match=r"cannot serve com\.rdkcentral\.DSM on "):
        served.loop.wait(provider.start())
    served.loop.wait(provider.close())


@pytest.mark.parametrize(
    "section, problem",
    [
        ({"buss": "system"}, "unknown key"),
        ({"bus": 1}, "bus.dbus.bus: must be a string"),
        ({"bus": "tcp"}, r"^bus\.dbus\.bus: must be"),
        ({"name": ":1.4"}, "well-known"),
        ({"object_path": "com/x"}, "object path"),
        ({"call_timeout": 0}, "positive"),
        ({"call_timeout": True}, "bus.dbus.call_timeout: must be a number"),
    ],
)
def test_config_refuses_bad_sections(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DbusConfig.from_config(section)


def test_config_defaults() -> None:
    config = DbusConfig.from_config({"call_timeout": 5})
    assert config == DbusConfig("system", "com.rdkcentral.DSM", "/com/rdkcentral/DSM", 5.0)


# == the system-bus policy ==========================================================================

POLICY = ROOT / "integration/com.rdkcentral.DSM.conf"

# What the stock system.conf grants before it includes system.d/*.conf.
_SYSTEM_LIKE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>{includes}</includedir>
</busconfig>
"""


@contextmanager
def system_like_bus(policy: str) -> Iterator[str]:
    """A dbus-daemon with a system-bus-like configuration including ``policy``; its address."""
    directory = Path(tempfile.mkdtemp(prefix="dbus-"))
    try:
        directory.chmod(0o755)  # clients run as other users
        (directory / "system.d").mkdir()
        (directory / "system.d" / POLICY.name).write_text(policy)
        config = directory / "system.conf"
        config.write_text(_SYSTEM_LIKE.format(socket=directory / "bus", includes=directory / "system.d"))
        daemon = subprocess.Popen(
            ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={config}", "--print-address=1"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            yield read_ready_line(daemon, 10.0)
        finally:
            stop_process(daemon)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_policy_file_rules() -> None:
    policies = {" ".join(f"{k}={v}" for k, v in p.attrib.items()): p for p in ET.parse(POLICY).getroot().iter("policy")}
    assert set(policies) == {"user=root", "context=default", "group=dsm"}
    root = [(r.tag, r.attrib) for r in policies["user=root"]]
    assert root[0] == ("allow", {"own": NAME})
    default = [(r.tag, r.attrib) for r in policies["context=default"]]
    assert default[:2] == [("deny", {"own": NAME}), ("deny", {"send_destination": NAME})]
    readers = {a.get("send_member") for tag, a in default if tag == "allow" and a.get("send_interface") == INTERFACE}
    read_methods = {m.name for m in Gio.DBusNodeInfo.new_for_xml(INTROSPECTION).lookup_interface(INTERFACE).methods}
    write_methods = {"Set", "Add", "Delete", "Operate", "OperateEach"}
    assert readers == read_methods - write_methods == {"Get", "GetBulk", "GetNames", "GetInstances", "GetSupportedDM"}
    writes = {("allow", NAME, INTERFACE, member) for member in write_methods}
    for who, rules in (("group=dsm", policies["group=dsm"]), ("user=root", policies["user=root"][1:])):
        granted = {(r.tag, r.get("send_destination"), r.get("send_interface"), r.get("send_member")) for r in rules}
        assert granted == writes, who


def test_dbus_daemon_accepts_the_policy_file() -> None:
    with system_like_bus(POLICY.read_text()) as address:
        assert address.startswith("unix:path=")


@pytest.mark.skipif(os.geteuid() != 0, reason="running clients under other uids needs root")
def test_policy_on_a_system_like_bus(loop: LoopThread) -> None:
    nobody, nogroup = 65534, 65534
    writers = next((g for g in grp.getgrall() if g.gr_gid not in (0, nogroup)), None)
    if writers is None:
        pytest.skip("no group to stand for the writers' group")
    dm = loop.call(softwaremodules)
    set_autostart = ("Set", f"{{'{EU}1.AutoStart': <true>}}", "false")

    def as_user(address: str, gid: int, method: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["gdbus", "call", "--address", address, "--dest", NAME, "--object-path", PATH,
                   "--method", f"{INTERFACE}.{method}", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=10, user=nobody, group=gid,
                              extra_groups=[])  # fmt: skip

    # The shipped file as it is: readers yes, writers no (nobody is not in "dsm"), no name
    # stealing; root (this test) may write.
    with system_like_bus(POLICY.read_text()) as address, serving(dm, loop, {"bus": address}):
        assert as_user(address, nogroup, "Get", f"['{EU}1.AutoStart']").returncode == 0
        assert as_user(address, nogroup, "GetBulk", f"['{EU}1.AutoStart']", "0").returncode == 0
        refused = as_user(address, nogroup, *set_autostart)
        assert "org.freedesktop.DBus.Error.AccessDenied" in refused.stderr
        assert call(address, NAME, *set_autostart).unpack() == ({EU + "1.AutoStart": True},)
        operated = call(address, NAME, "Operate", f"'{EU}1.SetRequestedState()'", "{'RequestedState': <'Idle'>}")
        assert operated.unpack() == ("", {})
        taken = subprocess.run(
            ["gdbus", "call", "--address", address, "--dest", "org.freedesktop.DBus", "--object-path",
             "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.RequestName", NAME, "4"],
            capture_output=True, text=True, timeout=10, user=nobody, group=nogroup,
        )  # fmt: skip
        assert "AccessDenied" in taken.stderr
        assert as_user(address, nogroup, "GetSupportedDM", f"['{EU}{{i}}.']", "true").returncode == 0

    # With the writers' group changed as the file's comment says: its members may Set.
    loop.call(lambda: dm.update(EU + "1.", {"AutoStart": False}))
    changed = POLICY.read_text().replace('group="dsm"', f'group="{writers.gr_name}"')
    with system_like_bus(changed) as address, serving(dm, loop, {"bus": address}):
        with watching(address, prober(dm, loop), user=nobody, group=nogroup) as watch:
            allowed = as_user(address, writers.gr_gid, *set_autostart)
            assert allowed.returncode == 0, allowed.stderr
            assert watch.wait_for("ValueChange").unpack() == (EU + "1.AutoStart", True)
        assert "AccessDenied" in as_user(address, nogroup, *set_autostart).stderr
