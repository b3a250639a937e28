"""The cffi rbus layer against a real librbus, rtrouted and rbuscli.

A tiny provider registered through dsm_tr181.buses.rbus_ffi in this process is driven by
rbuscli in separate processes. Runs only when DSM_RBUS_LIBRARY and DSM_RTROUTED name a
librbus.so.0 and an rtrouted (rbuscli from DSM_RBUSCLI or beside rtrouted).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.rbus_ffi import MethodReply, RbusError, SetRequest, SubscribeAction, ValueType
from dsm_tr181.errors import Fault, FaultCode
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

ROOT = "Device.DSMTest."
TABLE = ROOT + "Item."
EVENT = ROOT + "Changed!"


@pytest.fixture(scope="module")
def rbus(tools: RbusTools) -> rbus_ffi.Rbus:
    return rbus_ffi.load(str(tools.library))


@pytest.fixture(scope="module")
def broker(tools: RbusTools) -> Iterator[None]:
    try:
        with running_broker(tools):
            yield
    except BrokerBusy as exc:
        pytest.skip(str(exc))


class Provider:
    """A provider of one string, one writable uint32, a two-row table, a method, an event."""

    def __init__(self, rbus: rbus_ffi.Rbus) -> None:
        self.count = 7
        self.sets: list[SetRequest] = []
        self.subscribed = threading.Event()
        self.callback_threads: set[int] = set()
        self.answer_threads: set[int] = set()
        self.replies: list[MethodReply] = []
        self.label_names: list[str] = []
        self.handle = rbus_ffi.Handle(rbus, "dsm-test-provider")
        self.handle.register(
            [
                rbus_ffi.Property(ROOT + "Name", "string", lambda name: "dsm-tr181"),
                rbus_ffi.Property(ROOT + "Count", "unsignedInt", lambda name: self.count, set=self._set_count),
                rbus_ffi.Property(ROOT + "Broken", "string", self._broken),
                rbus_ffi.Table(TABLE + "{i}."),
                rbus_ffi.Property(TABLE + "{i}.Label", "string", self._label),
                rbus_ffi.Property(TABLE + "{i}.Size", "unsignedInt", lambda name: 10 * _instance(name)),
                rbus_ffi.Method(ROOT + "Echo()", self._echo),
                rbus_ffi.Method(ROOT + "Fail()", self._fail),
                rbus_ffi.Event(EVENT, self._subscribe),
            ]
        )
        self.handle.register_row(TABLE, 1, "first")
        self.handle.register_row(TABLE, 2)

    def _set_count(self, request: SetRequest) -> None:
        self.sets.append(request)
        self.count = request.value

    def _label(self, name: str) -> str:
        self.label_names.append(name)
        instance = name.removeprefix(TABLE).split(".")[0]
        if not instance.isdigit():
            raise Fault(FaultCode.OBJECT_NOT_FOUND, "aliases are not resolved here", name)
        return f"item-{instance}"

    def _broken(self, name: str) -> str:
        raise RuntimeError("a bug in a get handler")

    def _echo(self, name: str, inputs: dict[str, Any], reply: MethodReply) -> None:
        self.callback_threads.add(threading.get_ident())
        self.replies.append(reply)
        threading.Thread(target=self._answer_echo, args=(inputs, reply)).start()

    def _answer_echo(self, inputs: dict[str, Any], reply: MethodReply) -> None:
        # Answer only once the handler has returned, so the answer goes asynchronously.
        deadline = time.monotonic() + 5
        while not reply.deferred and time.monotonic() < deadline:
            time.sleep(0.001)
        self.answer_threads.add(threading.get_ident())
        if "In" not in inputs:
            reply.fail(Fault(FaultCode.INVALID_COMMAND_ARGUMENTS, "In is required"), {"Token": (5, "int")})
        else:
            reply.succeed({"Echo": (inputs["In"], "string"), "Length": (len(inputs["In"]), "unsignedInt")})

    def _fail(self, name: str, inputs: dict[str, Any], reply: MethodReply) -> None:
        raise Fault(FaultCode.COMMAND_FAILURE, "refused on purpose")

    def _subscribe(self, action: SubscribeAction, name: str, interval: int) -> bool:
        if action is SubscribeAction.SUBSCRIBE:
            self.subscribed.set()
        return False


def _instance(name: str) -> int:
    return int(name.removeprefix(TABLE).split(".")[0])


@pytest.fixture(scope="module")
def provider(rbus: rbus_ffi.Rbus, broker: None) -> Iterator[Provider]:
    provider = Provider(rbus)
    yield provider
    provider.handle.close()


# ---- without a broker (first: the module's broker starts with the first test using it) ----


def test_open_without_a_broker_fails_instead_of_hanging(rbus: rbus_ffi.Rbus) -> None:
    try:
        with no_broker():
            started = time.monotonic()
            with pytest.raises(rbus_ffi.RbusCallFailed) as caught:
                rbus_ffi.Handle(rbus, "dsm-test-no-broker")
            elapsed = time.monotonic() - started
    except BrokerBusy as exc:
        pytest.skip(str(exc))
    assert (caught.value.call, caught.value.code) == ("rbus_open", RbusError.BUS_ERROR)
    assert elapsed < 10


# ---- gets ----


def test_get_string(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", ROOT + "Name")
    assert result.error is None, result.text
    assert [(p.name, p.type, p.value) for p in result.parameters] == [(ROOT + "Name", "string", "dsm-tr181")]


def test_partial_path_get_expands_over_registered_rows(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", TABLE)
    assert result.error is None, result.text
    assert [(p.name, p.type, p.value) for p in result.parameters] == [
        (TABLE + "1.Label", "string", "item-1"),
        (TABLE + "1.Size", "uint32", "10"),
        (TABLE + "2.Label", "string", "item-2"),
        (TABLE + "2.Size", "uint32", "20"),
    ]


def test_wildcard_get_expands_over_registered_rows(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", TABLE + "*.Label")
    assert result.values() == {TABLE + "1.Label": "item-1", TABLE + "2.Label": "item-2"}, result.text


def test_alias_paths_reach_the_handler_unresolved(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", TABLE + "[first].Label")
    assert result.error == RbusError.ELEMENT_DOES_NOT_EXIST, result.text
    assert provider.label_names[-1] == TABLE + "[first].Label"


def test_partial_get_silently_drops_a_failing_leaf(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", ROOT)
    assert result.error is None, result.text
    assert ROOT + "Name" in result.values() and ROOT + "Broken" not in result.values()


def test_handler_exception_is_a_bus_error_not_an_empty_success(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "get", ROOT + "Broken")
    assert result.error == RbusError.BUS_ERROR, result.text
    assert result.parameters == []


# ---- sets ----


def test_set_with_the_declared_type(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "setv", ROOT + "Count", "uint32", "42")
    assert result.error is None and "setvalues succeeded" in result.text, result.text
    assert run_rbuscli(cli_tools, "get", ROOT + "Count").values() == {ROOT + "Count": "42"}
    request = provider.sets[-1]
    assert (request.name, request.value, request.commit) == (ROOT + "Count", 42, True)
    assert request.requester.startswith("rbuscli")


@pytest.mark.parametrize(
    ("rbus_type", "value", "error"),
    [
        ("string", "many", RbusError.INVALID_PARAMETER_TYPE),
        ("boolean", "true", RbusError.INVALID_PARAMETER_TYPE),
        ("int", "-1", RbusError.INVALID_PARAMETER_VALUE),
    ],
)
def test_set_with_a_wrong_type_or_value_is_refused(
    provider: Provider, cli_tools: RbusTools, rbus_type: str, value: str, error: RbusError
) -> None:
    before = provider.count
    result = run_rbuscli(cli_tools, "setv", ROOT + "Count", rbus_type, value)
    assert result.error == error, result.text
    assert provider.count == before


def test_set_of_a_read_only_parameter(provider: Provider, cli_tools: RbusTools) -> None:
    assert run_rbuscli(cli_tools, "setv", ROOT + "Name", "string", "x").error == RbusError.NOT_WRITABLE


# ---- methods ----


def test_method_answered_asynchronously_from_another_thread(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "method_values", ROOT + "Echo()", "In", "string", "hello")
    assert result.error is None, result.text
    assert [(p.name, p.type, p.value) for p in result.parameters] == [
        ("Echo", "string", "hello"),
        ("Length", "uint32", "5"),
    ]
    assert provider.replies[-1].deferred
    assert provider.answer_threads.isdisjoint(provider.callback_threads)


def test_method_failing_asynchronously(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "method_noargs", ROOT + "Echo()")
    assert result.error == RbusError.INVALID_INPUT, result.text
    assert parse_object_dump(result.text) == {
        "Token": "5",
        "error_code": str(int(RbusError.INVALID_INPUT)),
        "error_string": "In is required (7027 Invalid command arguments)",
    }


def test_method_raising_a_fault(provider: Provider, cli_tools: RbusTools) -> None:
    result = run_rbuscli(cli_tools, "method_noargs", ROOT + "Fail()")
    assert result.error == RbusError.INVALID_OPERATION, result.text
    assert "refused on purpose (7022 Command failure)" in result.text


# ---- events ----


def _subscribe(cli: InteractiveCli, name: str) -> None:
    """Subscribe and wait until rbuscli holds the subscription.

    rbuscli subscribes synchronously and silently, so the output of a get sent behind it
    marks the subscription done. Waiting for the provider's subscribe handler is not
    enough: an event published at once can reach rbuscli before it has recorded its own
    subscription, and rbuscli drops it ("no subscription exists").
    """
    cli.send("sub " + name)
    cli.send("get " + ROOT + "Name")
    cli.expect(r"Value\s*:\s*dsm-tr181", timeout=10)


def test_event_reaches_a_subscriber(provider: Provider, cli_tools: RbusTools) -> None:
    if shutil.which("stdbuf") is None:
        pytest.skip("stdbuf (coreutils) is needed to read interactive rbuscli")
    with InteractiveCli(cli_tools) as cli:
        _subscribe(cli, EVENT)
        assert provider.subscribed.is_set(), "the subscribe handler was never called"
        assert provider.handle.publish(EVENT, {"Message": ("hello", "string"), "Count": (3, "unsignedInt")})
        found = cli.expect(rf"Event received {EVENT} of type RBUS_EVENT_GENERAL(.*?)User data", timeout=10)
    assert parse_object_dump(found[1]) == {"Message": "hello", "Count": "3"}


def test_rows_registered_and_unregistered_publish_row_events(provider: Provider, cli_tools: RbusTools) -> None:
    if shutil.which("stdbuf") is None:
        pytest.skip("stdbuf (coreutils) is needed to read interactive rbuscli")
    with InteractiveCli(cli_tools) as cli:
        _subscribe(cli, TABLE)
        provider.handle.register_row(TABLE, 3, "third")
        created = cli.expect(rf"Event received {TABLE} of type RBUS_EVENT_OBJECT_CREATED(.*?)User data", timeout=10)
        assert parse_object_dump(created[1]) == {"rowName": TABLE + "3", "instNum": "3", "alias": "third"}
        assert run_rbuscli(cli_tools, "get", TABLE + "3.Label").values() == {TABLE + "3.Label": "item-3"}
        provider.handle.unregister_row(TABLE + "3.")
        deleted = cli.expect(rf"Event received {TABLE} of type RBUS_EVENT_OBJECT_DELETED(.*?)User data", timeout=10)
        assert parse_object_dump(deleted[1]) == {"rowName": TABLE + "3"}
    assert run_rbuscli(cli_tools, "get", TABLE + "3.Label").error is not None


# ---- consumer calls ----


def test_consumer_get_partial_get_and_invoke(provider: Provider, rbus: rbus_ffi.Rbus) -> None:
    with rbus_ffi.Handle(rbus, "dsm-test-consumer") as consumer:
        assert consumer.get(ROOT + "Name") == "dsm-tr181"
        assert consumer.get_ext([TABLE]) == [
            (TABLE + "1.Label", "item-1"),
            (TABLE + "1.Size", 10),
            (TABLE + "2.Label", "item-2"),
            (TABLE + "2.Size", 20),
        ]
        with pytest.raises(rbus_ffi.RbusCallFailed) as caught:
            consumer.get(ROOT + "Missing")
        assert caught.value.call == "rbus_get"
        with pytest.raises(rbus_ffi.RbusCallFailed) as caught:
            consumer.invoke(ROOT + "Fail()")
        assert (caught.value.call, caught.value.code) == ("rbusMethod_Invoke", RbusError.INVALID_OPERATION)


# ---- the binding without the broker ----


def test_values_round_trip(rbus: rbus_ffi.Rbus) -> None:
    east = datetime(2024, 5, 1, 10, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    cases: list[tuple[Any, ValueType]] = [
        ("héllo", ValueType.STRING),
        ("", ValueType.STRING),
        (True, ValueType.BOOLEAN),
        (-(2**31), ValueType.INT32),
        (2**32 - 1, ValueType.UINT32),
        (-(2**63), ValueType.INT64),
        (2**64 - 1, ValueType.UINT64),
        (east, ValueType.DATETIME),
        (rbus_ffi.UNKNOWN_TIME, ValueType.DATETIME),
    ]
    for value, vtype in cases:
        rvalue = rbus.new_value(value, vtype)
        try:
            assert rbus.lib.rbusValue_GetType(rvalue) == vtype
            assert rbus.decode(rvalue) == value
            assert rbus.decode_as(rvalue, vtype) == value
        finally:
            rbus.lib.rbusValue_Release(rvalue)
    rvalue = rbus.new_value("2024-05-01T10:00:00-03:00", ValueType.DATETIME)
    try:
        assert rbus.decode(rvalue) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    finally:
        rbus.lib.rbusValue_Release(rvalue)


@pytest.mark.parametrize(
    ("value", "sent_as", "declared", "fault"),
    [
        ("5", ValueType.STRING, ValueType.UINT32, FaultCode.INVALID_TYPE),
        (True, ValueType.BOOLEAN, ValueType.STRING, FaultCode.INVALID_TYPE),
        (-1, ValueType.INT32, ValueType.UINT32, FaultCode.INVALID_VALUE),
        (2**32, ValueType.UINT64, ValueType.UINT32, FaultCode.INVALID_VALUE),
    ],
)
def test_decode_as_checks_the_declared_type(
    rbus: rbus_ffi.Rbus, value: Any, sent_as: ValueType, declared: ValueType, fault: FaultCode
) -> None:
    rvalue = rbus.new_value(value, sent_as)
    try:
        with pytest.raises(Fault) as caught:
            rbus.decode_as(rvalue, declared)
        assert caught.value.code is fault
    finally:
        rbus.lib.rbusValue_Release(rvalue)


def test_objects_round_trip(rbus: rbus_ffi.Rbus) -> None:
    obj = rbus.new_object({"A": ("x", "string"), "B": (2, "int"), "C": (False, "boolean")})
    try:
        assert rbus.decode_object(obj) == {"A": "x", "B": 2, "C": False}
    finally:
        rbus.lib.rbusObject_Release(obj)


def test_wrong_python_type_is_refused(rbus: rbus_ffi.Rbus) -> None:
    with pytest.raises(TypeError):
        rbus.new_value(5, ValueType.STRING)
    with pytest.raises(TypeError):
        rbus.new_value(True, ValueType.UINT32)
    with pytest.raises(OverflowError):
        rbus.new_value(2**32, ValueType.UINT32)


def test_cdef_layouts_match_the_real_headers(tools: RbusTools, tmp_path: Path) -> None:
    """Compile the struct layouts from rbus's own headers and compare with the binding's."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    headers = tools.library.parent.parent / "include" / "rbus"
    if compiler is None or not (headers / "rbus.h").is_file():
        pytest.skip(f"needs a C compiler and rbus's headers in {headers}")
    layout = rbus_ffi.LAYOUTS[rbus_ffi.ffi.sizeof("void *")]
    lines = []
    for struct, (_, fields) in layout.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof({struct}));')
        lines += [f'printf("{struct}.{f} %zu\\n", offsetof({struct}, {f}));' for f in fields]
    source = tmp_path / "probe.c"
    source.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <rbus.h>\nint main(void) {\n" + "\n".join(lines) + "\n}\n"
    )
    subprocess.run([compiler, f"-I{headers}", str(source), "-o", str(tmp_path / "probe")], check=True)
    measured = dict(
        line.split()
        for line in subprocess.run(
            [str(tmp_path / "probe")], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    )
    expected = {struct: str(size) for struct, (size, _) in layout.items()}
    expected |= {f"{s}.{f}": str(o) for s, (_, fields) in layout.items() for f, o in fields.items()}
    assert measured == expected


def test_close_during_a_long_partial_get_waits_for_librbus_to_leave(rbus: rbus_ffi.Rbus, broker: None) -> None:
    """Closing while librbus expands a partial get in our handlers used to free what it
    walked (garbage names, then an abort): now the handlers fail at once, librbus finishes,
    and the handle closes."""
    leaves, started = 60, threading.Event()

    def slow(name: str) -> str:
        started.set()
        time.sleep(0.05)
        return "x"

    handle = rbus_ffi.Handle(rbus, "dsm-test-closing")
    table = "Device.DSMClosing.Item."
    handle.register([rbus_ffi.Table(table + "{i}."), rbus_ffi.Property(table + "{i}.V", "string", slow)])
    for instance in range(1, leaves + 1):
        handle.register_row(table, instance)
    with rbus_ffi.Handle(rbus, "dsm-test-closing-consumer") as consumer:
        reader = threading.Thread(target=lambda: _swallow(consumer.get_ext, ["Device.DSMClosing."]))
        reader.start()
        assert started.wait(10)
        began = time.monotonic()
        handle.close()  # mid-walk: ~3 s of leaves were still to come
        assert time.monotonic() - began < rbus_ffi.CLOSE_WAIT
        assert handle.activity.quiet_for() >= rbus_ffi.CLOSE_QUIET
        reader.join(30)
        assert not reader.is_alive()
    # The process is still healthy: a new provider registers and answers.
    with rbus_ffi.Handle(rbus, "dsm-test-closing-after") as after:
        after.register([rbus_ffi.Property("Device.DSMClosingAfter.Name", "string", lambda name: "alive")])
        assert run_rbuscli_value("Device.DSMClosingAfter.Name", rbus) == "alive"


def _swallow(call: Any, *args: Any) -> None:
    with contextlib.suppress(rbus_ffi.RbusCallFailed):  # the provider went away mid-answer
        call(*args)


def run_rbuscli_value(name: str, rbus: rbus_ffi.Rbus) -> Any:
    with rbus_ffi.Handle(rbus, "dsm-test-closing-reader") as reader:
        return reader.get(name)
