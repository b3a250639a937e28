"""USP semantics as a D-Bus client meets them: one table of requests and the TR-369 answer.

The real data model (two ExecEnvs, a DU, two EUs) is served by the D-Bus front end on a
private ``dbus-daemon``; each request is a ``gdbus call`` from another process. A refused
request must come back with the TR-369 7000-series code the table names (the D-Bus error
text starts with it, see dsm_tr181/buses/dbus_errors.py); an accepted one with the paths
or values named.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dsm_tr181.buses.dbus import DbusProvider
from dsm_tr181.buses.dbus_interface import INTERFACE
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from tests.support.dbusdaemon import gdbus_call, private_bus
from tests.support.loopthread import LoopThread

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("dbus-daemon", "gdbus")),
        reason="needs dbus-daemon and gdbus (Debian packages dbus, libglib2.0-bin)",
    ),
]

NAME = "com.rdkcentral.DSM"
PATH = "/com/rdkcentral/DSM"
SM = "Device.SoftwareModules."
EU = SM + "ExecutionUnit."
CERT = "Device.Security.Certificate."


@dataclass
class Bus:
    address: str
    restarted: list[str]


def model(restarted: list[str]) -> DataModel:
    dm = DataModel(load_schema())
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default", "Enable": True, "Status": "Up"})
    dm.add_row(SM + "ExecEnv.", {"Name": "spare", "Enable": False, "Status": "Disabled"})
    eus = [
        dm.add_row(EU, {"EUID": f"eu-{i}", "Name": f"app{i}", "Status": status, "ExecutionEnvRef": ee.ref}).ref
        for i, status in ((1, "Active"), (2, "Idle"))
    ]
    dm.add_row(
        SM + "DeploymentUnit.",
        {"UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "du")), "ExecutionEnvRef": ee.ref, "ExecutionUnitList": tuple(eus)},
    )

    def restart(call: CommandCall) -> dict[str, object]:
        restarted.append(call.node.path)
        return {}

    dm.on_command(EU + "{i}.Restart()", restart)
    return dm


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    loop = LoopThread()
    restarted: list[str] = []
    try:
        with private_bus() as private:
            dm = loop.call(lambda: model(restarted))
            provider = DbusProvider.create(dm, {"bus": private.address, "call_timeout": 10}, loop.loop)
            loop.wait(provider.start())
            try:
                yield Bus(private.address, restarted)
            finally:
                loop.wait(provider.close())
    finally:
        loop.stop()


def call(bus: Bus, method: str, *args: str) -> tuple[int, str]:
    """(0, reply) or (TR-369 code, error text) of a gdbus call."""
    try:
        return 0, gdbus_call(bus.address, NAME, PATH, f"{INTERFACE}.{method}", *args)
    except subprocess.CalledProcessError as failed:
        match = re.search(r"GDBus\.Error:[\w.]+: (\d{4}) (.*)", failed.stderr)
        assert match, failed.stderr
        return int(match[1]), match[2]


CASES = [
    # (id, method, args, expected code, text the reply must contain)
    ("get-unknown-path", "Get", [f"['{SM}NoSuch.']"], 7026, ""),
    ("get-partial-path", "Get", [f"['{EU}1.']"], 0, "'Device.SoftwareModules.ExecutionUnit.1.Name': <'app1'>"),
    ("get-wildcard", "Get", [f"['{EU}*.Name']"], 0, "'Device.SoftwareModules.ExecutionUnit.2.Name': <'app2'>"),
    ("get-search", "Get", [f"['{EU}[Status==\"Idle\"].Name']"], 0, "'Device.SoftwareModules.ExecutionUnit.2.Name'"),
    ("get-unique-key", "Get", [f"['{EU}[EUID==\"eu-1\"].Name']"], 0, "<'app1'>"),
    ("get-alias", "Get", [f"['{EU}[cpe-2].Name']"], 0, "<'app2'>"),
    ("get-bad-syntax", "Get", [f"['{SM}..Name']"], 7008, ""),
    ("set-read-only", "Set", [f"{{'{EU}1.Status': <'Idle'>}}", "false"], 7013, ""),
    ("set-wrong-type", "Set", [f"{{'{SM}ExecEnv.1.Enable': <'maybe'>}}", "false"], 7011, ""),
    ("set-out-of-range", "Set", [f"{{'{SM}ExecEnv.1.InitialRunLevel': <'70000'>}}", "false"], 7012, ""),
    ("set-unknown-param", "Set", [f"{{'{EU}1.NoSuch': <'x'>}}", "false"], 7026, ""),
    (
        "set-strong-ref-missing",
        "Set",
        [f"{{'{SM}ExecEnv.1.Signers': <'Device.Security.Certificate.9'>}}", "false"],
        7012,
        "",
    ),
    ("add-not-creatable", "Add", [f"'{SM}ExecEnv.'", "@a{sv} {}"], 7019, ""),
    ("add-not-a-table", "Add", [f"'{SM}'", "@a{sv} {}"], 7018, ""),
    ("delete-not-deletable", "Delete", [f"['{EU}1.']"], 7024, ""),
    ("operate-not-a-command", "Operate", [f"'{EU}1.Name'", "@a{sv} {}"], 7026, ""),
    ("operate-unknown-command", "Operate", [f"'{EU}1.NoSuch()'", "@a{sv} {}"], 7026, ""),
    ("operate-missing-object", "Operate", [f"'{EU}9.Restart()'", "@a{sv} {}"], 7016, ""),
]


@pytest.mark.parametrize(("method", "args", "code", "contains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_usp_request_gets_the_tr369_answer(bus: Bus, method: str, args: list[str], code: int, contains: str) -> None:
    got, text = call(bus, method, *args)
    assert got == code, text
    assert contains in text


def test_operate_reaches_the_one_object_named(bus: Bus) -> None:
    before = len(bus.restarted)
    assert call(bus, "Operate", f"'{EU}[EUID==\"eu-2\"].Restart()'", "@a{sv} {}")[0] == 0
    assert bus.restarted[before:] == [EU + "2."]
