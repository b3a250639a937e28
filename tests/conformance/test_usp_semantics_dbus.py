"""USP semantics as a client of a USP front end meets them: tables of requests and the TR-369 answer.

The real data model (two ExecEnvs, a DU, three EUs) is served by the D-Bus front end on a
private ``dbus-daemon`` and by the control socket, both USP front ends (the USP flavour:
no CWMP-only parameters, dsm_tr181/schema/flavours.py). Each D-Bus request is a ``gdbus
call`` from another process; a refused one must come back with the TR-369 7000-series code
the table names (the D-Bus error text starts with it, see dsm_tr181/buses/dbus_errors.py);
an accepted one with the paths or values named. The control socket is asked the same
over its socket, its faults carrying the code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.buses.control_socket import ControlServer
from dsm_tr181.buses.dbus import DbusProvider
from dsm_tr181.buses.dbus_interface import INTERFACE
from dsm_tr181.control_client import ControlClient, DaemonError
from dsm_tr181.errors import Fault, FaultCode
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
    socket: Path


def model(restarted: list[str]) -> DataModel:
    dm = DataModel(load_schema())
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default", "Enable": True, "Status": "Up"})
    dm.add_row(SM + "ExecEnv.", {"Name": "spare", "Enable": False, "Status": "Disabled"})
    eus = [
        dm.add_row(EU, {"EUID": f"eu-{i}", "Name": f"app{i}", "Status": status, "ExecutionEnvRef": ee.ref}).ref
        for i, status in ((1, "Active"), (2, "Idle"), (3, "Active"))
    ]
    dm.add_row(
        SM + "DeploymentUnit.",
        {"UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "du")), "ExecutionEnvRef": ee.ref, "ExecutionUnitList": tuple(eus)},
    )

    def restart(call: CommandCall) -> dict[str, object]:
        if call.node.values["Name"] == "app3":  # one that fails: its own result, not the request's
            raise Fault(FaultCode.COMMAND_FAILURE, "app3 refuses")
        restarted.append(call.node.path)
        return {}

    dm.on_command(EU + "{i}.Restart()", restart)
    dm.on_command(EU + "{i}.SetRequestedState()", lambda call: restarted.append(f"{call.node.path}:{call.args}") or {})
    return dm


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    loop = LoopThread()
    restarted: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="dsm-usp-"))  # short: UNIX socket paths are limited
    try:
        with private_bus() as private:
            dm = loop.call(lambda: model(restarted))
            provider = DbusProvider.create(dm, {"bus": private.address, "call_timeout": 10}, loop.loop)
            loop.wait(provider.start())
            server = ControlServer(dm, directory / "dsm.sock")
            loop.wait(server.start())
            try:
                yield Bus(private.address, restarted, server.path)
            finally:
                loop.wait(server.close())
                loop.wait(provider.close())
    finally:
        loop.stop()
        shutil.rmtree(directory, ignore_errors=True)


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
    # TR-369 error codes: 7018 "Object is not a table" for GetInstances of a single object
    ("get-instances-not-a-table", "GetInstances", [f"['{SM}']", "false"], 7018, ""),
    ("get-instances-of-a-table", "GetInstances", [f"['{EU}']", "true"], 0, f"'{EU}3.'"),
    ("get-instances-of-a-row", "GetInstances", [f"['{EU}1.']", "false"], 0, ""),
    # the CWMP-only parameters are not in the USP flavour: outside the supported model (7026)
    ("get-cwmp-only", "Get", [f"['{EU}1.RequestedState']"], 7026, ""),
    ("get-cwmp-only-supported", "GetSupportedDM", [f"['{EU}{{i}}.RequestedState']", "false"], 7026, ""),
    ("set-cwmp-only-requested-state", "Set", [f"{{'{EU}1.RequestedState': <'Active'>}}", "false"], 7026, ""),
    ("set-cwmp-only-search", "Set", [f"{{'{EU}*.RequestedState': <'Idle'>}}", "false"], 7026, ""),
    ("set-cwmp-only-reset", "Set", [f"{{'{SM}ExecEnv.1.Reset': <'true'>}}", "false"], 7026, ""),
    ("set-cwmp-only-run-level", "Set", [f"{{'{SM}ExecEnv.1.RequestedRunLevel': <'2'>}}", "false"], 7026, ""),
    # TR-369 R-OPR.1/R-OPR.2: a search path runs the command on every match, each with its result
    (
        "operate-each-wildcard",
        "OperateEach",
        [f"'{EU}*.Restart()'", "@a{sv} {}"],
        0,
        f"'{EU}2.Restart()', '', {{}}, 0, '')",
    ),
    (
        "operate-each-search",
        "OperateEach",
        [f"'{EU}[Status==\"Active\"].Restart()'", "@a{sv} {}"],
        0,
        f"'{EU}3.Restart()', '', {{}}, 7022, '7022 Command failure",
    ),
    ("operate-each-not-a-command", "OperateEach", [f"'{EU}*.Name'", "@a{sv} {}"], 7026, ""),
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


def test_operate_on_several_objects_runs_nothing(bus: Bus) -> None:
    """Operate is the one-object call: a path matching several is refused before any runs."""
    before = len(bus.restarted)
    code, text = call(bus, "Operate", f"'{EU}*.Restart()'", "@a{sv} {}")
    assert code == 7026 and "3 objects match" in text, text
    assert bus.restarted[before:] == []


def test_operate_each_runs_one_request_per_matched_object(bus: Bus) -> None:
    before = len(bus.restarted)
    code, text = call(bus, "OperateEach", f"'{EU}*.Restart()'", "@a{sv} {}")
    assert code == 0, text
    assert re.findall(r"\('([^']+)', '', (?:@a\{sv\} )?\{\}, (\d+)", text) == [
        (EU + "1.Restart()", "0"), (EU + "2.Restart()", "0"), (EU + "3.Restart()", "7022")
    ]  # fmt: skip
    assert bus.restarted[before:] == [EU + "1.", EU + "2."]


def _supported(text: str) -> list[dict[str, Any]]:
    reply = json.loads(text[2:-3].encode().decode("unicode_escape"))
    objects: list[dict[str, Any]] = reply["req_obj_results"][0]["supported_objs"]
    return objects


def test_get_supported_dm_first_level_only_is_the_object_and_its_children_without_their_items(bus: Bus) -> None:
    # TR-369 GetSupportedDM first_level_only: "the list of child objects does not include
    # commands, events, or Parameters of the child objects"
    code, text = call(bus, "GetSupportedDM", f"['{SM}']", "true")
    assert code == 0, text
    objects = _supported(text)
    assert [o["supported_obj_path"] for o in objects] == [
        SM, SM + "ExecEnvClass.{i}.", SM + "ExecEnv.{i}.", SM + "DeploymentUnit.{i}.", EU + "{i}."
    ]  # fmt: skip
    assert objects[0]["supported_commands"] and objects[0]["supported_params"]
    for child in objects[1:]:
        assert not any(child.get(k) for k in ("supported_params", "supported_commands", "supported_events")), child


def test_a_get_over_d_bus_leaves_out_the_cwmp_only_parameters(bus: Bus) -> None:
    code, text = call(bus, "Get", f"['{SM}']")
    assert code == 0 and f"'{EU}1.Name'" in text and f"'{SM}ExecEnv.1.InitialRunLevel'" in text
    for name in ("ExecEnv.1.Reset", "ExecEnv.1.RequestedRunLevel", "ExecutionUnit.1.RequestedState"):
        assert f"'{SM}{name}'" not in text
    assert f"'{EU}1.SupportedDataModelList'" not in text
    code, text = call(bus, "GetSupportedDM", f"['{EU}{{i}}.']", "false")
    served = {p["param_name"] for p in _supported(text)[0]["supported_params"]}
    assert "Status" in served and not served & {"RequestedState", "SupportedDataModelList"}


# == the control socket ==============================================================================


def ask(bus: Bus, method: str, params: dict[str, Any]) -> tuple[int, Any]:
    """(0, result) or (TR-369 code, fault) of a control-socket request."""
    try:
        return 0, ControlClient(str(bus.socket), timeout=10).call(method, params)
    except DaemonError as refused:
        return int(refused.fault["code"]), refused.fault


def _rows_without_cwmp_only(result: dict[str, str]) -> bool:
    return EU + "1.Name" in result and not any(
        name.endswith((".RequestedState", ".SupportedDataModelList", ".Reset", ".RequestedRunLevel")) for name in result
    )


def _first_level(result: dict[str, list[dict[str, Any]]]) -> bool:
    objects = result[SM]
    return [o["path"] for o in objects][-1] == EU + "{i}." and all(
        not (o["params"] or o["commands"] or o["events"]) for o in objects[1:]
    )


def _no_results(result: dict[str, list[dict[str, Any]]]) -> bool:
    return result == {"results": []}


def _operated(result: dict[str, list[dict[str, Any]]]) -> bool:
    by_command = {r["command"]: r for r in result["results"]}
    return (
        list(by_command) == [EU + "1.Restart()", EU + "3.Restart()"]
        and by_command[EU + "1.Restart()"]["outputs"] == {}
        and by_command[EU + "3.Restart()"]["fault"]["code"] == 7022
    )


SOCKET_CASES: list[tuple[str, str, dict[str, Any], int, Callable[[Any], bool] | None]] = [
    # (id, method, params, expected code, check of the result)
    ("get-row", "get", {"paths": [EU + "1."]}, 0, _rows_without_cwmp_only),
    ("get-cwmp-only", "get", {"paths": [EU + "1.RequestedState"]}, 7026, None),
    ("set-cwmp-only", "set", {"values": {EU + "1.RequestedState": "Active"}}, 7026, None),
    ("set-cwmp-only-reset", "set", {"values": {SM + "ExecEnv.1.Reset": "true"}}, 7026, None),
    ("supported-cwmp-only", "supported", {"paths": [SM + "ExecEnv.{i}.RequestedRunLevel"]}, 7026, None),
    ("supported-first-level-only", "supported", {"paths": [SM], "first_level_only": True}, 0, _first_level),
    ("instances-not-a-table", "instances", {"paths": [SM]}, 7018, None),
    ("instances-of-a-table", "instances", {"paths": [EU]}, 0, lambda rows: len(rows) == 3),
    ("operate-search", "operate", {"command": f'{EU}[Status=="Active"].Restart()'}, 0, _operated),
    ("operate-search-no-match", "operate", {"command": f'{EU}[Name=="none"].Restart()'}, 0, _no_results),
    ("operate-search-with-wait", "operate", {"command": f"{EU}*.Restart()", "wait": True}, 7004, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "params", "code", "check"), [c[1:] for c in SOCKET_CASES], ids=[c[0] for c in SOCKET_CASES]
)
def test_control_socket_request_gets_the_tr369_answer(
    bus: Bus, method: str, params: dict[str, Any], code: int, check: Callable[[Any], bool] | None
) -> None:
    got, answer = ask(bus, method, params)
    assert got == code, answer
    assert check is None or check(answer), answer


def test_old_dsmcli_verbs_still_start_and_stop_through_the_command(bus: Bus) -> None:
    """eu.start/eu.stop use SetRequestedState(), not the CWMP-only RequestedState."""
    assert ask(bus, "eu.stop", {"uid": "eu-1"}) == (0, "Stopping EU")
    assert ask(bus, "eu.start", {"uid": "eu-2"}) == (0, "Starting EU")
    assert bus.restarted[-2:] == [f"{EU}1.:{{'RequestedState': 'Idle'}}", f"{EU}2.:{{'RequestedState': 'Active'}}"]
