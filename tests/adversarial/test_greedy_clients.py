"""Items 4, 5, 9 and 10 (NaN id): clients that ask too much, never read, never speak, or leave.

A real ControlServer on a real DataModel (the daemon's loop in a thread), real UNIX-socket
clients. Each test checks the refusal or the drop, what the log says, and that another
client is served meanwhile (a generous latency bound: the figures are in bench/stress_bench.py)."""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.buses import control_socket, memory
from dsm_tr181.buses.control_socket import ControlServer
from dsm_tr181.buses.log_limit import RateLimitedLog
from dsm_tr181.control_client import HEADER, ControlClient, read_frame
from dsm_tr181.errors import FaultCode
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel
from tests.support.loopthread import LoopThread

SM = "Device.SoftwareModules."
EE = SM + "ExecEnv."
SMALL_GET = {"paths": [EE + "1.Name"]}
LATENCY_BOUND = 2.0  # seconds: a sanity bound for "served meanwhile", far above the real figures


class Served:
    """A ControlServer with small limits on its own loop thread."""

    def __init__(self, directory: Path, **limits: Any) -> None:
        self.socket = directory / "dsm.sock"
        self.loop = LoopThread()
        self.dm = DataModel(load_schema())
        self.loop.call(self.dm.add_row, EE, {"Name": "default", "Enable": True, "Status": "Up", "Type": "OCI"})
        self.server = ControlServer(self.dm, self.socket, **limits)
        self.loop.wait(self.server.start())

    def client(self) -> ControlClient:
        return ControlClient(str(self.socket), timeout=10)

    def raw(self, request: bytes | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.socket))
        if request is not None:
            sock.sendall(HEADER.pack(len(request)) + request)
        return sock

    def timed_get(self) -> float:
        started = time.monotonic()
        assert self.client().call("get", SMALL_GET) == {EE + "1.Name": "default"}
        return time.monotonic() - started

    def close(self) -> None:
        self.loop.wait(self.server.close())
        self.loop.stop()


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    limits = getattr(request, "param", {})  # parametrized indirectly with the server's limits
    with tempfile.TemporaryDirectory(prefix="dsm-adv-") as directory:  # short: UNIX socket paths are limited
        running = Served(Path(directory), **limits)
        try:
            yield running
        finally:
            running.close()


def strict_json(body: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(body, parse_constant=refuse)


def control_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == control_socket.__name__ and r.levelno >= logging.ERROR]


# == item 4: one request's work is bounded =========================================================


@pytest.mark.integration
def test_a_request_naming_50000_paths_is_refused_at_once_while_others_are_served(served: Served) -> None:
    body = json.dumps({"id": 1, "method": "get", "params": {"paths": ["Device."] * 50_000}}).encode()
    assert len(body) < control_socket.DEFAULT_MAX_FRAME  # under the frame limit, as in the report
    started = time.monotonic()
    with served.raw(body) as greedy:
        reply = strict_json(read_frame(greedy) or b"")
    assert time.monotonic() - started < LATENCY_BOUND
    assert reply["fault"]["code"] == FaultCode.RESOURCES_EXCEEDED.usp and "at most" in reply["fault"]["message"]

    # The largest request allowed (MAX_PATHS whole-tree reads) runs in slices: small gets get through.
    allowed = {"paths": ["Device."] * control_socket.MAX_PATHS}
    worker = threading.Thread(target=lambda: served.client().call("get", allowed))
    worker.start()
    latencies = [served.timed_get() for _ in range(5)]
    worker.join(30)
    assert max(latencies) < LATENCY_BOUND


@pytest.mark.integration
def test_a_result_over_the_bound_is_a_clear_fault(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_socket, "MAX_RESULT_VALUES", 5)
    reply = served.client()
    with pytest.raises(Exception, match="exceeds 5 values"):
        reply.call("get", {"paths": ["Device."]})
    assert served.timed_get() < LATENCY_BOUND


@pytest.mark.integration
@pytest.mark.parametrize("served", [{"shared_read_seconds": 1.5}], indirect=True)  # ample on a loaded machine
def test_whole_tree_gets_share_a_large_answer_only_while_the_tree_is_unchanged(served: Served) -> None:
    """[daemon] shared_read_seconds over the socket: a computed parameter counts the reads that
    really walk the tree."""
    walks: list[float] = []

    def grow() -> None:
        ee = served.dm.node(EE + "1.")
        for n in range(300):
            eu = served.dm.add_row(
                SM + "ExecutionUnit.", {"EUID": f"eu{n}", "Name": f"app{n}", "ExecutionEnvRef": ee.ref}
            )
            du = {"UUID": f"00000000-0000-5000-8000-{n:012d}", "Name": f"app{n}", "ExecutionUnitList": (eu.ref,)}
            served.dm.add_row(SM + "DeploymentUnit.", du)
        served.dm.on_get(EE + "{i}.AvailableMemory", lambda node: walks.append(time.monotonic()) or 0)

    served.loop.call(grow)
    client = served.client()
    first = client.call("get", {"paths": ["Device."]})
    assert client.call("get", {"paths": ["Device."]}) == first and len(walks) == 1  # kept
    assert len(json.dumps(first)) >= memory.LARGE
    served.loop.call(served.dm.update, EE + "1.", {"Vendor": "changed"})
    assert client.call("get", {"paths": ["Device."]})[EE + "1.Vendor"] == "changed" and len(walks) == 2
    time.sleep(1.6)
    client.call("get", {"paths": ["Device."]})
    assert len(walks) == 3  # its time was up: read again


# == item 5: subscribers that never read ==========================================================


@pytest.mark.integration
@pytest.mark.parametrize("served", [{"event_backlog": 50, "max_subscribers": 8}], indirect=True)
def test_subscribers_that_never_read_are_dropped_and_their_backlog_given_back(
    served: Served, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    trims: list[float] = []  # the heap the backlogs leave free goes back to the system once drops pause
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(time.monotonic()) or True)
    request = json.dumps({"id": 1, "method": "events", "params": {}}).encode()
    sleepers = []
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up fast: it never reads
        sock.connect(str(served.socket))
        sock.sendall(HEADER.pack(len(request)) + request)
        sleepers.append(sock)
    deadline = time.monotonic() + 5
    while served.server.methods.subscribers < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.server.methods.subscribers == 5

    refused = [served.raw(request) for _ in range(4)]  # 5 + 3 = the cap of 8; the 4th is one too many
    replies = [strict_json(read_frame(sock) or b"") for sock in refused]
    assert [r.get("fault", {}).get("code") for r in replies] == [None, None, None, FaultCode.RESOURCES_EXCEEDED.usp]
    for sock in refused:
        sock.close()

    for n in range(2000):  # many more notifications than a backlog holds
        served.loop.call(served.dm.update, EE + "1.", {"Status": "Up" if n % 2 else "Disabled"})
        if n % 500 == 0:
            assert served.timed_get() < LATENCY_BOUND
    deadline = time.monotonic() + 5
    while served.server.methods.subscribers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.server.methods.subscribers == 0
    assert served.loop.call(lambda: len(served.dm.notifications._subscriptions)) == 0
    dropped = [r for r in caplog.records if "dropping an events client" in r.getMessage()]
    assert len(dropped) == 5 and "50 notifications unread" in dropped[0].getMessage()
    deadline = time.monotonic() + 5
    while not trims and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trims
    for sock in sleepers:
        sock.close()
    assert control_errors(caplog) == []


@pytest.mark.integration
@pytest.mark.parametrize("served", [{"event_backlog": 5000}], indirect=True)
def test_a_subscriber_that_falls_behind_and_catches_up_gets_every_notification_in_order(served: Served) -> None:
    """Notifications go straight into the socket of a client that keeps up and wait in its
    backlog while it does not: one that stops reading for a while, then reads again, still
    gets each one once, in order, and later ones straight away again."""
    request = json.dumps({"id": 1, "method": "events", "params": {"prefix": EE}}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # backed up after a few notifications
    sock.settimeout(10)
    sock.connect(str(served.socket))
    sock.sendall(HEADER.pack(len(request)) + request)
    assert strict_json(read_frame(sock) or b"")["result"] == {"subscribed": EE}
    for n in range(3000):  # not read meanwhile: more than the socket's buffers hold
        served.loop.call(served.dm.update, EE + "1.", {"Vendor": f"v{n}"})
    assert served.loop.call(lambda: len(next(iter(served.server.methods._backlogs.values())))) > 0

    def vendors(count: int) -> list[str]:
        seen = []
        while len(seen) < count:
            event = strict_json(read_frame(sock) or b"")["event"]
            if event.get("path") == EE + "1.Vendor":
                seen.append(event["value"])
        return seen

    assert vendors(3000) == [f"v{n}" for n in range(3000)]
    backlog = served.loop.call(lambda: next(iter(served.server.methods._backlogs.values())))

    def published_and_waiting(n: int) -> int:
        served.dm.update(EE + "1.", {"Vendor": f"v{n}"})
        return len(backlog)  # on the loop, before any other task ran

    # Caught up: each later one is in the socket as it is published, never in the backlog.
    assert [served.loop.call(published_and_waiting, n) for n in range(3000, 3010)] == [0] * 10
    assert vendors(10) == [f"v{n}" for n in range(3000, 3010)]
    sock.close()


# == item 9: expected disconnects are quiet, errors rate-limited, connections capped ==============


@pytest.mark.integration
def test_events_clients_that_leave_log_no_error(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = json.dumps({"id": 1, "method": "events", "params": {}}).encode()
    for _ in range(20):
        with served.raw(request) as sock:
            assert strict_json(read_frame(sock) or b"")["result"] == {"subscribed": ""}
    deadline = time.monotonic() + 5
    while served.server.methods.subscribers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.server.methods.subscribers == 0
    assert control_errors(caplog) == [] and "Traceback" not in caplog.text


@pytest.mark.integration
@pytest.mark.parametrize("served", [{"max_connections": 8}], indirect=True)
def test_connections_over_the_cap_get_a_clear_refusal_and_few_log_lines(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    idle = [served.raw() for _ in range(8)]  # connected, never speaking
    time.sleep(0.2)
    for _ in range(100):
        with served.raw() as extra:
            reply = strict_json(read_frame(extra) or b"")
        assert reply["fault"]["code"] == FaultCode.RESOURCES_EXCEEDED.usp
        assert "too many connections (at most 8)" in reply["fault"]["message"]
    refusals = [r for r in caplog.records if "refusing a control connection" in r.getMessage()]
    assert 1 <= len(refusals) <= 5  # rate-limited, not one line per refusal
    for sock in idle:
        sock.close()
    time.sleep(0.2)
    assert served.timed_get() < LATENCY_BOUND  # served again once the idle ones left


@pytest.mark.unit
def test_the_connection_cap_stays_below_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_socket.resource, "getrlimit", lambda which: (256, 4096))
    budget = 256 - control_socket._SPARE_DESCRIPTORS
    assert control_socket._descriptor_budget() == budget
    server = ControlServer(DataModel(load_schema()), "/nonexistent/dsm.sock", max_connections=1000)
    assert server.max_connections == budget


@pytest.mark.unit
def test_repeated_errors_are_logged_a_few_times_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("dsm.test"), burst=3, window=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="dsm.test"):
        for _ in range(1000):
            limited.log(logging.ERROR, "boom", exc_info=False)
        now[0] = 11.0
        limited.log(logging.ERROR, "boom")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["boom"] * 3 + ["997 more like the above in 11 s, not logged", "boom"]


# == item 10: a NaN request id ====================================================================


@pytest.mark.integration
def test_a_nan_request_id_gets_a_valid_json_fault(served: Served) -> None:
    with served.raw(b'{"id": NaN, "method": "get", "params": {"paths": ["Device."]}}') as sock:
        reply = strict_json(read_frame(sock) or b"")  # strict JSON: no NaN echoed back
    assert reply["id"] is None and reply["fault"]["code"] == FaultCode.MESSAGE_FAILED.usp
    assert served.timed_get() < LATENCY_BOUND
