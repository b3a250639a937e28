"""RbusProvider against a real librbus, rtrouted and rbuscli.

The real data model (``DataModel(load_schema())``) is served by the provider on an
asyncio loop in a background thread, as the daemon serves it, and driven by rbuscli in
separate processes. An LCM stand-in answers InstallDU() the way the LCM does: later,
after creating the DeploymentUnit row and emitting DUStateChange!. Runs only when
DSM_RBUS_LIBRARY and DSM_RTROUTED name a librbus.so.0 and an rtrouted (rbuscli from
DSM_RBUSCLI or beside rtrouted).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from dsm_tr181.buses.rbus import RbusProvider
from dsm_tr181.buses.rbus_ffi import RbusError
from dsm_tr181.buses.rbus_methods import ASYNC_HANDLE
from dsm_tr181.errors import AdapterUnavailable, Fault, FaultCode
from dsm_tr181.schema import Access, BaseType, DataType, Object, Parameter, Schema, UniqueKey, load_schema
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from dsm_tr181.tree.nodes import Node
from tests.support.loopthread import LoopThread
from tests.support.rtrouted import (
    BrokerBusy,
    InteractiveCli,
    RbusTools,
    no_broker,
    parse_object_dump,
    run_rbuscli,
    running_broker,
)

pytestmark = [pytest.mark.rbus, pytest.mark.integration]

SM = "Device.SoftwareModules."
TEST_ROOT = "Device.DSMTestTables."
EU1 = SM + "ExecutionUnit.1."


@pytest.fixture(scope="module")
def tools(cli_tools: RbusTools) -> RbusTools:
    """Every test here drives rbuscli."""
    return cli_tools


class LcmStandIn:
    """Stands in for the LCM behind InstallDU(): after a short delay it creates the
    DeploymentUnit row, emits DUStateChange! and completes (or fails when the URL says so)."""

    DELAY = 0.3

    def __init__(self, dm: DataModel, ee: Node) -> None:
        self.dm = dm
        self.ee = ee
        dm.on_command(SM + "InstallDU()", self.install)

    def install(self, call: CommandCall) -> Any:
        return self._install(str(call.args["URL"]))

    async def _install(self, url: str) -> dict[str, str]:
        await asyncio.sleep(self.DELAY)
        started = datetime.now(UTC)
        if "fail" in url:
            raise Fault(FaultCode.FILE_TRANSFER_FAILURE, f"cannot fetch {url}")
        du_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, url))
        du = self.dm.add_row(
            SM + "DeploymentUnit.",
            {"UUID": du_uuid, "Name": url.rsplit("/", 1)[-1], "URL": url, "Status": "Installed",
             "Version": "1.0", "ExecutionEnvRef": self.ee.ref},
        )  # fmt: skip
        self.dm.emit_event(
            SM + "DUStateChange!",
            {"UUID": du_uuid, "DeploymentUnitRef": du.ref, "Version": "1.0", "CurrentState": "Installed",
             "Resolved": True, "StartTime": started, "CompleteTime": datetime.now(UTC),
             "OperationPerformed": "Install", "Fault.FaultCode": 0},
        )  # fmt: skip
        return {"UUID": du_uuid, "Version": "1.0", "ExecEnvRef": self.ee.ref}


class Served:
    def __init__(self, loop: LoopThread, dm: DataModel, provider: RbusProvider) -> None:
        self.loop = loop
        self.dm = dm
        self.provider = provider


def _populate(dm: DataModel) -> Node:
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default", "Alias": "main", "Enable": True, "Status": "Up"})
    dm.add_row(SM + "ExecutionUnit.", {"EUID": "eu-1", "Name": "app", "Status": "Idle", "ExecutionEnvRef": ee.ref})
    return ee


@pytest.fixture(scope="module")
def served(tools: RbusTools) -> Iterator[Served]:
    try:
        with running_broker(tools):
            loop = LoopThread()
            dm = DataModel(load_schema())
            provider = RbusProvider.create(dm, {"library": str(tools.library)}, loop.loop)
            try:
                loop.wait(provider.start())
                ee = loop.call(_populate, dm)  # rows made after start: registered on notification
                loop.call(LcmStandIn, dm, ee)
                loop.wait(provider.synced())
                yield Served(loop, dm, provider)
            finally:
                loop.wait(provider.close())
                loop.stop()
    except BrokerBusy as exc:
        pytest.skip(str(exc))


# ---- start without a broker (before the module's broker starts) ----


def test_start_without_a_broker_is_an_unavailable_adapter(tools: RbusTools) -> None:
    loop = LoopThread()
    try:
        provider = RbusProvider.create(DataModel(load_schema()), {"library": str(tools.library)}, loop.loop)
        with no_broker():
            started = time.monotonic()
            with pytest.raises(AdapterUnavailable, match="rtrouted"):
                loop.wait(provider.start())
        assert time.monotonic() - started < 10
        loop.wait(provider.close())  # nothing opened: a no-op
    except BrokerBusy as exc:
        pytest.skip(str(exc))
    finally:
        loop.stop()


# ---- gets ----


def test_get_a_parameter(served: Served, tools: RbusTools) -> None:
    result = run_rbuscli(tools, "get", SM + "ExecEnvNumberOfEntries")
    assert [(p.name, p.type, p.value) for p in result.parameters] == [(SM + "ExecEnvNumberOfEntries", "uint32", "1")]


def test_partial_get_lists_every_row_and_value(served: Served, tools: RbusTools) -> None:
    result = run_rbuscli(tools, "get", SM)
    assert result.error is None, result.text
    got = result.values()
    expected = served.loop.call(lambda: served.dm.get_values([SM]))
    assert set(got) == set(expected)
    assert got[SM + "ExecEnv.1.Name"] == "default"
    assert got[EU1 + "AutoRestart.Enable"] == "false"
    assert got[EU1 + "ExecutionEnvRef"] == SM + "ExecEnv.1"


def test_get_by_alias(served: Served, tools: RbusTools) -> None:
    result = run_rbuscli(tools, "get", SM + "ExecEnv.[main].Status")
    assert result.values() == {SM + "ExecEnv.[main].Status": "Up"}, result.text


def test_nested_rows_come_and_go_with_the_tree(served: Served, tools: RbusTools) -> None:
    host = EU1 + "HostObject."
    served.loop.call(served.dm.add_row, host, {"Source": "/data", "Destination": "/mnt"})
    served.loop.wait(served.provider.synced())
    assert run_rbuscli(tools, "get", host).values() == {
        host + "1.Source": "/data",
        host + "1.Destination": "/mnt",
        host + "1.Options": "",
        host + "1.Alias": "cpe-1",
    }
    served.loop.call(served.dm.delete_row, host + "1.")
    assert run_rbuscli(tools, "get", host + "1.Source").error is not None


def test_get_of_a_row_that_does_not_exist(served: Served, tools: RbusTools) -> None:
    assert run_rbuscli(tools, "get", SM + "ExecEnv.7.Name").error is not None


# ---- sets ----


def _value(served: Served, path: str) -> Any:
    return served.loop.call(served.dm.value, path)


def test_set_a_writable_parameter(served: Served, tools: RbusTools) -> None:
    result = run_rbuscli(tools, "setv", EU1 + "AutoStart", "boolean", "true")
    assert "setvalues succeeded" in result.text, result.text
    assert _value(served, EU1 + "AutoStart") is True
    assert run_rbuscli(tools, "get", EU1 + "AutoStart").values() == {EU1 + "AutoStart": "true"}


@pytest.mark.parametrize(
    ("name", "rbus_type", "value", "error"),
    [
        ("Name", "string", "renamed", RbusError.NOT_WRITABLE),
        ("AutoStart", "string", "yes", RbusError.INVALID_PARAMETER_TYPE),
        ("RunLevel", "uint32", "70000", RbusError.INVALID_PARAMETER_VALUE),
        ("RequestedState", "string", "Paused", RbusError.INVALID_PARAMETER_VALUE),
    ],
)
def test_refused_sets(served: Served, tools: RbusTools, name: str, rbus_type: str, value: str, error: int) -> None:
    before = _value(served, EU1 + name)
    assert run_rbuscli(tools, "setv", EU1 + name, rbus_type, value).error == error
    assert _value(served, EU1 + name) == before


def test_multi_parameter_set_applies_all_or_nothing(served: Served, tools: RbusTools) -> None:
    good, bad = (EU1 + "ShutdownDelay", "uint32", "7"), (EU1 + "RunLevel", "uint32", "70000")
    assert run_rbuscli(tools, "setvalues", *good, *bad).error == RbusError.INVALID_PARAMETER_VALUE
    assert _value(served, EU1 + "ShutdownDelay") != 7
    result = run_rbuscli(tools, "setvalues", *good, EU1 + "RunLevel", "uint32", "3")
    assert "setvalues succeeded" in result.text, result.text
    assert (_value(served, EU1 + "ShutdownDelay"), _value(served, EU1 + "RunLevel")) == (7, 3)


# ---- methods and events ----


def test_install_is_answered_asynchronously_with_the_usp_handle(served: Served, tools: RbusTools) -> None:
    url = "http://example.com/app-one.tar"
    started = time.monotonic()
    result = run_rbuscli(tools, "method_values", SM + "InstallDU()", "URL", "string", url, ASYNC_HANDLE, "int32", "42")
    assert time.monotonic() - started >= LcmStandIn.DELAY
    assert result.error is None, result.text
    outputs = {p.name: (p.type, p.value) for p in result.parameters}
    assert outputs[ASYNC_HANDLE] == ("int32", "42")
    assert outputs["Version"] == ("string", "1.0")
    assert outputs["ExecEnvRef"] == ("string", SM + "ExecEnv.1")
    assert run_rbuscli(tools, "get", SM + "DeploymentUnit.1.URL").values() == {SM + "DeploymentUnit.1.URL": url}


def test_failed_install_carries_the_fault_and_the_usp_handle(served: Served, tools: RbusTools) -> None:
    url = "http://example.com/fail.tar"
    result = run_rbuscli(tools, "method_values", SM + "InstallDU()", "URL", "string", url, ASYNC_HANDLE, "int32", "9")
    assert result.error == RbusError.BUS_ERROR, result.text
    dumped = parse_object_dump(result.text)
    assert dumped[ASYNC_HANDLE] == "9"
    assert f"cannot fetch {url} (7002 File transfer failure)" in dumped["error_string"]


def test_bad_arguments_are_refused_at_once(served: Served, tools: RbusTools) -> None:
    result = run_rbuscli(tools, "method_noargs", SM + "InstallDU()")
    assert result.error == RbusError.INVALID_INPUT, result.text
    assert "mandatory input argument URL is missing" in result.text


def test_synchronous_command_answers_at_once(served: Served, tools: RbusTools) -> None:
    served.loop.call(served.dm.on_command, EU1.replace("1.", "{i}.") + "SetRequestedState()", lambda call: {})
    result = run_rbuscli(tools, "method_values", EU1 + "SetRequestedState()", "RequestedState", "string", "Active")
    assert result.error is None, result.text


def _subscribed(cli: InteractiveCli, name: str) -> None:
    """Subscribe and wait until rbuscli holds the subscription: a get sent behind the
    subscription answers only once it is done (rbuscli subscribes silently)."""
    cli.send("sub " + name)
    cli.send("get " + SM + "ExecEnv.1.Name")
    cli.expect(r"Value\s*:\s*default", timeout=10)


@pytest.fixture
def cli(tools: RbusTools) -> Iterator[InteractiveCli]:
    if shutil.which("stdbuf") is None:
        pytest.skip("stdbuf (coreutils) is needed to read interactive rbuscli")
    with InteractiveCli(tools) as interactive:
        yield interactive


def test_du_state_change_and_row_events_reach_subscribers(
    served: Served, tools: RbusTools, cli: InteractiveCli
) -> None:
    _subscribed(cli, SM + "DUStateChange!")
    _subscribed(cli, SM + "DeploymentUnit.")
    url = "http://example.com/app-two.tar"
    result = run_rbuscli(tools, "method_values", SM + "InstallDU()", "URL", "string", url)
    assert result.error is None, result.text
    row = served.loop.call(lambda: next(n for n in served.dm.node(SM).walk() if n.values.get("URL") == url))
    created = cli.expect(rf"Event received {SM}DeploymentUnit\. of type RBUS_EVENT_OBJECT_CREATED(.*?)User data", 10)
    assert parse_object_dump(created[1])["rowName"] == row.ref
    changed = cli.expect(rf"Event received {SM}DUStateChange! of type RBUS_EVENT_GENERAL(.*?)User data", 10)
    args = parse_object_dump(changed[1])
    assert (args["DeploymentUnitRef"], args["CurrentState"], args["Resolved"]) == (row.ref, "Installed", "true")
    assert args["Fault.FaultCode"] == "0" and args["OperationPerformed"] == "Install"
    served.loop.call(served.dm.delete_row, row.path)
    deleted = cli.expect(rf"Event received {SM}DeploymentUnit\. of type RBUS_EVENT_OBJECT_DELETED(.*?)User data", 10)
    assert parse_object_dump(deleted[1]) == {"rowName": row.ref}
    assert run_rbuscli(tools, "get", row.path + "URL").error is not None


def test_value_change_is_published_with_the_old_value(served: Served, tools: RbusTools, cli: InteractiveCli) -> None:
    name = EU1 + "Status"
    served.loop.call(served.dm.update, EU1, {"Status": "Idle"})
    _subscribed(cli, name)
    served.loop.call(served.dm.update, EU1, {"Status": "Active"})
    found = cli.expect(rf"Event received {re.escape(name)} of type RBUS_EVENT_VALUE_CHANGED(.*?)User data", 10)
    data = parse_object_dump(found[1])
    assert (data["value"], data["oldValue"]) == ("Active", "Idle")


# ---- a table a controller may add rows to (none in the served model) ----


def _schema_with_a_creatable_table() -> Schema:
    text = DataType(BaseType.STRING)
    count = DataType(BaseType.UNSIGNED_INT)
    root = Object("Device.")
    top = Object(TEST_ROOT, parent=root)
    table = Object(
        TEST_ROOT + "Item.{i}.",
        access=Access.READ_WRITE,
        min_entries=0,
        max_entries=None,
        unique_keys=(UniqueKey(("Alias",)),),
        num_entries_parameter="ItemNumberOfEntries",
        parent=top,
    )
    root.children["DSMTestTables"] = top
    top.children["Item"] = table
    top.parameters["ItemNumberOfEntries"] = Parameter("ItemNumberOfEntries", TEST_ROOT + "ItemNumberOfEntries", count)
    for name in ("Alias", "Label"):
        table.parameters[name] = Parameter(name, table.path + name, text, Access.READ_WRITE)
    return Schema("test", "test", {o.path: o for o in (root, top, table)}, {})


def test_rows_added_and_removed_by_a_controller(served: Served, tools: RbusTools) -> None:
    dm = DataModel(_schema_with_a_creatable_table())
    section = {"library": str(tools.library), "component": "dsm-test-tables"}
    provider = RbusProvider.create(dm, section, served.loop.loop)
    served.loop.wait(provider.start())
    try:
        table = TEST_ROOT + "Item."
        assert f"{table}1. added" in run_rbuscli(tools, "addrow", table, "first").text
        assert served.loop.call(lambda: dm.value(table + "1.Alias")) == "first"
        assert run_rbuscli(tools, "setv", table + "[first].Label", "string", "one").error is None
        assert run_rbuscli(tools, "get", table).values() == {table + "1.Alias": "first", table + "1.Label": "one"}
        run_rbuscli(tools, "delrow", table + "1.")
        assert served.loop.call(lambda: dm.value(TEST_ROOT + "ItemNumberOfEntries")) == 0
        assert run_rbuscli(tools, "get", table + "1.Label").error is not None
    finally:
        served.loop.wait(provider.close())


def test_skipped_subtrees_are_not_registered(served: Served, tools: RbusTools) -> None:
    dm = DataModel(load_schema())
    served.loop.call(lambda: dm.add_row("Device.DeviceInfo.VendorLogFile.", {"Name": "/tmp/x.log"}))
    section = {"library": str(tools.library), "component": "dsm-test-skip", "skip": ["Device.DeviceInfo."]}
    provider = RbusProvider.create(dm, section, served.loop.loop)
    served.loop.wait(served.provider.close())  # the served tree owns the same names
    served.loop.wait(provider.start())
    try:
        assert run_rbuscli(tools, "get", "Device.DeviceInfo.VendorLogFile.1.Name").error is not None
        assert run_rbuscli(tools, "get", SM + "ExecEnvNumberOfEntries").values() == {SM + "ExecEnvNumberOfEntries": "0"}
    finally:
        served.loop.wait(provider.close())
        served.loop.wait(served.provider.start())


# ---- last: closing drops the elements; starting again serves them again ----


def test_close_drops_every_element_and_start_serves_again(served: Served, tools: RbusTools) -> None:
    served.loop.wait(served.provider.close())
    served.loop.wait(served.provider.close())  # idempotent
    assert run_rbuscli(tools, "get", SM + "ExecEnvNumberOfEntries").error is not None
    # What the daemon does after an rtrouted restart, which silently drops the elements.
    served.loop.wait(served.provider.start())
    assert run_rbuscli(tools, "get", EU1 + "Name").values() == {EU1 + "Name": "app"}
    url = "http://example.com/app-three.tar"
    result = run_rbuscli(tools, "method_values", SM + "InstallDU()", "URL", "string", url)
    assert result.error is None, result.text
