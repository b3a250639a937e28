"""The rbus provider's parts without librbus: config, elements, loop bridge, snapshot
reads, set batches, methods and value changes (a real librbus: tests/integration)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest

from dsm_tr181.buses import rbus as rbus_provider
from dsm_tr181.buses import rbus_ffi, rbus_gets, rbus_outbox, rbus_sets
from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.rbus import RbusConfig, RbusProvider
from dsm_tr181.buses.rbus_ffi import HandlerActivity as Activity
from dsm_tr181.buses.rbus_ffi import SetRequest, SubscribeAction, Typed
from dsm_tr181.buses.rbus_gets import SnapshotReads
from dsm_tr181.buses.rbus_methods import ASYNC_HANDLE, Methods
from dsm_tr181.buses.rbus_outbox import Outbox
from dsm_tr181.buses.rbus_sets import SetBatches
from dsm_tr181.buses.rbus_valuechange import ValueChanges
from dsm_tr181.buses.rbus_values import carried_type, to_rbus, typed
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema import load_schema
from dsm_tr181.schema.model import Access, Schema
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from dsm_tr181.tree.notifications import Kind
from dsm_tr181.tree.paths import schema_path
from tests.support.rbus_standin import Consumer, StandInBus

pytestmark = pytest.mark.unit

SM = "Device.SoftwareModules."
EU = SM + "ExecutionUnit."


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The daemon's loop in a background thread; tests act as the bus threads."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


@pytest.fixture
def dm(schema: Schema) -> DataModel:
    dm = DataModel(schema)
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default", "Alias": "main", "Status": "Up"})
    dm.add_row(EU, {"EUID": "eu-1", "Name": "app", "Status": "Idle", "ExecutionEnvRef": ee.ref})
    return dm


def on_loop(loop: asyncio.AbstractEventLoop, function: Any, *args: Any) -> Any:
    return LoopBridge(loop, 5).call(function, *args)


def run_now(action: Callable[[], None]) -> None:
    """An outbox that runs what is posted at once."""
    action()


# ---- configuration and elements ----


def test_config_defaults_and_validation() -> None:
    assert RbusConfig.from_config({}) == RbusConfig("librbus.so.0", "dsm-tr181", 10.0, (), 10.0)
    with pytest.raises(ValueError, match=r"^bus\.rbus\.watchdog_interval: must be >= 0"):
        RbusConfig.from_config({"watchdog_interval": -1})
    assert RbusConfig.from_config({"skip": ["Device.DeviceInfo."]}).skip == ("Device.DeviceInfo.",)
    with pytest.raises(ValueError, match=r"bus\.rbus\.skip: must be a list of strings"):
        RbusConfig.from_config({"skip": "Device.DeviceInfo."})
    assert RbusConfig.from_config({"call_timeout": 5}).call_timeout == 5.0
    with pytest.raises(ValueError, match="unknown key"):
        RbusConfig.from_config({"timeout": 5})
    with pytest.raises(ValueError, match=r"bus\.rbus\.component: must be a string"):
        RbusConfig.from_config({"component": 3})
    with pytest.raises(ValueError, match=r"bus\.rbus\.call_timeout: must be a number"):
        RbusConfig.from_config({"call_timeout": True})
    with pytest.raises(ValueError, match=r"^bus\.rbus\.call_timeout: must be > 0"):
        RbusConfig.from_config({"call_timeout": 0})


def test_every_served_name_becomes_an_element(schema: Schema, loop: asyncio.AbstractEventLoop) -> None:
    provider = RbusProvider.create(DataModel(schema), {}, loop)
    handle = rbus_ffi.Handle(rbus_ffi.Rbus(StandInBus().lib), "dsm-tr181")
    outbox = Outbox(handle, provider._trigger())
    connection = rbus_provider._Connection(
        handle,
        Activity(),
        outbox,
        Methods(provider.dm, LoopBridge(loop, 5), run_now),
        ValueChanges(provider.dm, loop, lambda name, data: None),
    )
    elements = {element.name: element for element in provider._elements(connection)}
    objects = schema.objects.values()
    # A table is registered by its own name (…DeploymentUnit.), the name consumers subscribe
    # to for row events: librbus restores such cached subscriptions only on an equal name.
    assert {n for n, e in elements.items() if isinstance(e, rbus_ffi.Table)} == {
        o.path.removesuffix("{i}.") for o in objects if o.multi_instance
    }
    parameters = {o.path + n: p for o in objects for n, p in o.parameters.items()}
    properties = {n: e for n, e in elements.items() if isinstance(e, rbus_ffi.Property)}
    assert set(properties) == set(parameters)
    assert {n for n, e in properties.items() if e.set} == {
        n for n, p in parameters.items() if p.access is Access.READ_WRITE
    }
    assert properties[SM + "ExecEnv.{i}.Signers"].type == "string"  # a list
    assert properties[EU + "{i}.AutoStart"].type == "boolean"
    assert {n for n, e in elements.items() if isinstance(e, rbus_ffi.Method)} == {
        o.path + n for o in objects for n in o.commands
    }
    assert {n for n, e in elements.items() if isinstance(e, rbus_ffi.Event)} == {
        o.path + n for o in objects for n in o.events
    }
    assert SM + "DUStateChange!" in elements
    assert not any(e.add_row or e.remove_row for e in elements.values() if isinstance(e, rbus_ffi.Table))
    # Nothing of the provider's own: the outbox rides on a served parameter outside any table.
    tables = {n for n, e in elements.items() if isinstance(e, rbus_ffi.Table)}
    assert set(elements) == set(parameters) | tables | {o.path + n for o in objects for n in [*o.commands, *o.events]}
    (trigger,) = [e for e in properties.values() if e.own_get is not None]
    assert trigger.name == outbox.trigger and "{i}" not in trigger.name
    handle.close()


# ---- the outbox ----


def test_outbox_runs_actions_in_order_on_the_callback_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the librbus stand-in: the outbox gets its own trigger property; the get handler,
    on the component's callback thread, runs the actions; another component's get does not."""
    monkeypatch.setattr(rbus_outbox, "BATCH", 3)
    bus = StandInBus()
    handle = rbus_ffi.Handle(rbus_ffi.Rbus(bus.lib), "dsm-test")
    outbox = Outbox(handle, "Device.Test.Trigger")
    handle.register([rbus_ffi.Property("Device.Test.Trigger", "string", lambda name: "x", own_get=outbox.flush)])
    ran: list[int] = []
    threads: set[int] = set()

    def action(i: int) -> None:
        ran.append(i)
        threads.add(threading.get_ident())

    for i in range(7):
        outbox.post(lambda i=i: action(i))
    outbox.post(lambda: (_ for _ in ()).throw(RuntimeError("logged, not fatal")))
    outbox.post(lambda: action(7))
    assert Consumer(bus).get(["Device.Test.Trigger"])[0] == 0 and ran == []  # another component asked
    synced = outbox.synced()
    outbox.start()
    synced.result(5)
    assert ran == list(range(8))
    assert threads == {bus.components["dsm-test"].thread.ident}
    outbox.stop()
    outbox.post(lambda: ran.append(99))
    assert outbox.synced().done()
    assert ran == list(range(8))
    handle.close()


# ---- values ----


def test_values_as_rbus_carries_them(schema: Schema) -> None:
    signers = schema.parameter(SM + "ExecEnv.{i}.Signers")
    created = schema.parameter(SM + "ExecEnv.{i}.CreatedAt")
    assert signers is not None and created is not None
    assert carried_type(signers.type) == "string"
    assert to_rbus(signers.type, ("a", "b")) == "a,b"
    assert typed(signers.type, ()) == ("", "string")
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    assert (carried_type(created.type), to_rbus(created.type, moment)) == ("dateTime", moment)
    assert schema_path(SM + "ExecutionUnit.3.HostObject.12.Source") == EU + "{i}.HostObject.{i}.Source"


# ---- the loop bridge ----


def test_bridge_runs_on_the_loop_and_raises_what_the_work_raises(loop: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(loop, 5)
    assert bridge.call(threading.get_ident) != threading.get_ident()
    with pytest.raises(Fault, match="refused"):
        bridge.call(lambda: (_ for _ in ()).throw(Fault(FaultCode.INVALID_VALUE, "refused")))


def test_bridge_times_out_without_running_the_work_later(loop: asyncio.AbstractEventLoop) -> None:
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 5)  # the loop is busy
    ran: list[int] = []
    with pytest.raises(Fault) as caught:
        LoopBridge(loop, 0.1).call(ran.append, 1)
    assert caught.value.code is FaultCode.INTERNAL_ERROR
    release.set()
    assert on_loop(loop, lambda: ran) == []


# ---- snapshot reads ----


class CountingBridge(LoopBridge):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, 5)
        self.calls = 0

    def call(self, function: Any, *args: Any) -> Any:
        self.calls += 1
        return super().call(function, *args)


def test_a_row_is_read_in_one_round_trip(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    bridge = CountingBridge(loop)
    reads = SnapshotReads(dm, bridge)
    assert reads.get(EU + "1.Name") == "app"
    assert reads.get(EU + "1.AutoRestart.Enable") is False
    assert reads.get(EU + "1.References") == ""  # a list, as text
    assert bridge.calls == 1
    assert reads.get(SM + "ExecEnv.[main].Status") == "Up"
    assert reads.get(SM + "ExecEnv.[main].Status") == "Up"
    assert bridge.calls == 2


def test_a_change_or_age_voids_the_snapshot(
    dm: DataModel, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = CountingBridge(loop)
    reads = SnapshotReads(dm, bridge)
    assert reads.get(EU + "1.Status") == "Idle"
    on_loop(loop, dm.update, EU + "1.", {"Status": "Active"})
    on_loop(loop, reads.changed)
    assert reads.get(EU + "1.Status") == "Active"
    monkeypatch.setattr(rbus_gets, "MAX_AGE", 0.0)
    reads.get(EU + "1.Status")
    assert bridge.calls == 3


def test_reading_what_does_not_exist(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    reads = SnapshotReads(dm, LoopBridge(loop, 5))
    for name, code in [(EU + "9.Name", FaultCode.OBJECT_NOT_FOUND), (EU + "1.Nope", FaultCode.INVALID_PATH)]:
        with pytest.raises(Fault) as caught:
            reads.get(name)
        assert caught.value.code is code


# ---- set batches ----


def _set(name: str, value: Any, commit: bool, session: int = 0, requester: str = "cli") -> SetRequest:
    return SetRequest(name, value, commit, session, requester)


def test_sets_apply_together_on_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[dict[str, Any]] = []
    batches = SetBatches(applied.append)
    batches.on_set(_set("A", 1, False))
    batches.on_set(_set("X", 9, True, requester="other"))
    batches.on_set(_set("B", 2, False))
    assert applied == [{"X": 9}]
    batches.on_set(_set("C", 3, True))
    assert applied[-1] == {"A": 1, "B": 2, "C": 3}
    batches.on_set(_set("A", 4, False))
    monkeypatch.setattr(rbus_sets, "MAX_IDLE", 0.0)
    time.sleep(0.01)
    batches.on_set(_set("B", 5, True))
    assert applied[-1] == {"B": 5}  # the leftover of a set rbus refused partway is dropped


def test_a_failed_commit_leaves_nothing_behind() -> None:
    applied: list[dict[str, Any]] = []

    def apply(values: dict[str, Any]) -> None:
        applied.append(values)
        if "bad" in values:
            raise Fault(FaultCode.INVALID_VALUE, "bad")

    batches = SetBatches(apply)
    batches.on_set(_set("A", 1, False))
    with pytest.raises(Fault):
        batches.on_set(_set("bad", 0, True))
    batches.on_set(_set("B", 2, True))
    assert applied[-1] == {"B": 2}


# ---- methods ----


class FakeReply:
    def __init__(self) -> None:
        self.answer: Future[tuple[str, dict[str, Typed]]] = Future()

    def succeed(self, outputs: dict[str, Typed] | None = None) -> None:
        self.answer.set_result(("ok", dict(outputs or {})))

    def fail(self, error: BaseException, outputs: dict[str, Typed] | None = None) -> None:
        self.answer.set_result((str(error), dict(outputs or {})))


def test_synchronous_command_answers_at_once(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    states: list[Any] = []
    dm.on_command(EU + "{i}.SetRequestedState()", lambda call: states.append(call.args["RequestedState"]) or {})
    methods = Methods(dm, LoopBridge(loop, 5), run_now)
    reply = FakeReply()
    methods.call(EU + "1.SetRequestedState()", {"RequestedState": "Active", ASYNC_HANDLE: 3}, reply)  # type: ignore[arg-type]
    assert reply.answer.result(0) == ("ok", {ASYNC_HANDLE: (3, "int")})
    assert states == ["Active"]


def test_asynchronous_command_answers_on_completion(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    finish: asyncio.Future[dict[str, str]] = loop.create_future()
    seen: list[CommandCall] = []

    def install(call: CommandCall) -> Any:
        seen.append(call)
        return finish

    dm.on_command(SM + "InstallDU()", install)
    methods = Methods(dm, LoopBridge(loop, 5), run_now)
    on_loop(loop, dm.subscribe, methods.completed, {Kind.OPERATION_COMPLETE})
    reply = FakeReply()
    inputs = {"URL": "http://x/a.tar", "HostObject": {"1": {"Source": "/a", "Destination": "/b"}}, ASYNC_HANDLE: 7}
    methods.call(SM + "InstallDU()", inputs, reply)  # type: ignore[arg-type]
    assert not reply.answer.done(), reply.answer.result()
    assert seen[0].rows("HostObject.") == [{"Source": "/a", "Destination": "/b"}]
    du_uuid = "6ba7b810-9dad-51d1-80b4-00c04fd430c8"
    loop.call_soon_threadsafe(finish.set_result, {"UUID": du_uuid, "Version": "1", "ExecEnvRef": ""})
    outputs = {"UUID": (du_uuid, "string"), "Version": ("1", "string"), "ExecEnvRef": ("", "string")}
    assert reply.answer.result(5) == ("ok", {**outputs, ASYNC_HANDLE: (7, "int")})


def test_failures_and_close_answer_with_the_usp_handle(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    dm.on_command(SM + "InstallDU()", lambda call: loop.create_future())
    methods = Methods(dm, LoopBridge(loop, 5), run_now)
    refused = FakeReply()
    methods.call(SM + "InstallDU()", {ASYNC_HANDLE: 1}, refused)  # type: ignore[arg-type]
    text, outputs = refused.answer.result(5)
    assert "mandatory input argument URL is missing" in text and outputs == {ASYNC_HANDLE: (1, "int")}
    waiting = FakeReply()
    methods.call(SM + "InstallDU()", {"URL": "http://x/a.tar", ASYNC_HANDLE: 2}, waiting)  # type: ignore[arg-type]
    on_loop(loop, methods.close)
    text, outputs = waiting.answer.result(5)
    assert "closed while request" in text and outputs == {ASYNC_HANDLE: (2, "int")}
    late = FakeReply()
    methods.call(SM + "InstallDU()", {"URL": "http://x/b.tar"}, late)  # type: ignore[arg-type]
    assert "closing" in late.answer.result(5)[0]


# ---- value changes ----


def test_value_changes_follow_subscriptions(dm: DataModel, loop: asyncio.AbstractEventLoop) -> None:
    published: list[tuple[str, dict[str, Typed]]] = []
    changes = ValueChanges(dm, loop, lambda name, data: published.append((name, data)))
    kinds = {Kind.VALUE_CHANGE: changes.changed, Kind.OBJECT_CREATION: changes.created}
    on_loop(loop, dm.subscribe, lambda note: kinds[note.kind](note), set(kinds))
    assert changes.on_subscribe(SubscribeAction.SUBSCRIBE, EU + "*.Status", 0) is False
    assert changes.on_subscribe(SubscribeAction.SUBSCRIBE, EU + "1.Name", 5) is True  # interval: rbus samples
    on_loop(loop, dm.update, EU + "1.", {"Status": "Active", "Name": "renamed"})
    on_loop(loop, dm.add_row, EU, {"EUID": "eu-2", "Status": "Idle"})
    on_loop(loop, dm.update, EU + "2.", {"Status": "Active"})
    assert published == [
        (EU + "1.Status", {"value": ("Active", "string"), "oldValue": ("Idle", "string")}),
        (EU + "2.Status", {"value": ("Active", "string"), "oldValue": ("Idle", "string")}),
    ]
    changes.on_subscribe(SubscribeAction.UNSUBSCRIBE, EU + "*.Status", 0)
    on_loop(loop, dm.update, EU + "1.", {"Status": "Idle"})
    assert len(published) == 2
