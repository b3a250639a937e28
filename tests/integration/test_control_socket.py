"""The control socket and dsmcli, end to end: a real ControlServer on a real DataModel,
driven by the real ``dsmcli`` in a subprocess and by raw socket clients.

The LCM is not under test here: ``StandInLcm`` registers just enough InstallDU(),
Update(), Uninstall() and SetRequestedState() behaviour on the DataModel, with its own
calls (add_row, update, delete_row, emit_event, PROGRESS notifications).
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsm_tr181.buses.control_socket import ControlServer
from dsm_tr181.control_client import HEADER, ControlClient, encode_frame, read_frame
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema import load_schema
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from dsm_tr181.tree.nodes import Node
from dsm_tr181.tree.notifications import Kind, Notification

pytestmark = pytest.mark.integration

T = TypeVar("T")
SM = "Device.SoftwareModules."
EE = SM + "ExecEnv."
DU = SM + "DeploymentUnit."
EU = SM + "ExecutionUnit."
CHUNK = 64 * 1024
BROKEN_PARAM = "Device.DeviceInfo.VendorConfigFileNumberOfEntries"


class StandInLcm:
    """Stands in for dsm_tr181.lcm: DU and EU rows, PROGRESS and DUStateChange! as the LCM makes them."""

    def __init__(self, dm: DataModel) -> None:
        self.dm = dm
        self.credentials: dict[str, tuple[str, str]] = {}  # DU UUID -> (Username, Password) received
        dm.on_command(SM + "InstallDU()", self.install)
        dm.on_command(DU + "{i}.Update()", self.update)
        dm.on_command(DU + "{i}.Uninstall()", self.uninstall)
        dm.on_command(EU + "{i}.SetRequestedState()", self.set_requested_state)

    def install(self, call: CommandCall) -> Coroutine[Any, Any, dict[str, Value]]:
        url = str(call.args["URL"])
        ee = str(call.args.get("ExecutionEnvRef", ""))
        if not ee:
            raise Fault(FaultCode.UNKNOWN_EE, "no ExecutionEnvRef")
        du_uuid = str(call.args.get("UUID") or uuid.uuid5(uuid.NAMESPACE_URL, url))
        self.credentials[du_uuid] = (str(call.args.get("Username", "")), str(call.args.get("Password", "")))
        name = url.rsplit("/", 1)[-1].removesuffix(".tar")
        values = {"UUID": du_uuid, "URL": url, "Name": name, "Version": "1.0", "ExecutionEnvRef": ee}
        du = self.dm.add_row(DU, {**values, "Status": "Installing"})
        return self._install(call, du, datetime.now(UTC))

    async def _install(self, call: CommandCall, du: Node, started: datetime) -> dict[str, Value]:
        await self._download(call, du)
        self.progress(call, du, "unpack")
        if "corrupt" in str(du.values["URL"]):
            fault = Fault(FaultCode.CORRUPT_DATA, "the archive is not a tar file")
            self.announce(du, "Install", "Failed", started, fault)
            self.dm.delete_row(du)
            raise fault
        eu = self.dm.add_row(
            EU,
            {"EUID": f"{du.values['Name']}-{du.number}", "Name": du.values["Name"], "Version": "1.0",
             "ExecutionEnvRef": du.values["ExecutionEnvRef"], "Status": "Idle", "RequestedState": "Idle"},
        )  # fmt: skip
        self.dm.update(du, {"Status": "Installed", "Resolved": True, "ExecutionUnitList": (eu.ref,)})
        self.announce(du, "Install", "Installed", started)
        return {"UUID": du.values["UUID"], "Version": du.values["Version"], "ExecEnvRef": du.values["ExecutionEnvRef"]}

    def update(self, call: CommandCall) -> Coroutine[Any, Any, dict[str, Value]]:
        self.dm.update(call.node, {"Status": "Updating"})
        return self._update(call, datetime.now(UTC))

    async def _update(self, call: CommandCall, started: datetime) -> dict[str, Value]:
        du = call.node
        await self._download(call, du)
        self.dm.update(du, {"URL": call.args.get("URL", du.values["URL"]), "Version": "2.0", "Status": "Installed"})
        self.announce(du, "Update", "Installed", started)
        return {}

    def uninstall(self, call: CommandCall) -> Coroutine[Any, Any, dict[str, Value]]:
        self.dm.update(call.node, {"Status": "Uninstalling"})
        return self._uninstall(call, datetime.now(UTC))

    async def _uninstall(self, call: CommandCall, started: datetime) -> dict[str, Value]:
        du = call.node
        await asyncio.sleep(0.01)
        for ref in du.values["ExecutionUnitList"]:  # type: ignore[union-attr]
            self.dm.delete_row(str(ref))
        self.announce(du, "Uninstall", "Uninstalled", started)
        self.dm.delete_row(du)
        return {}

    def set_requested_state(self, call: CommandCall) -> dict[str, Value]:
        state = call.args["RequestedState"]
        self.dm.update(call.node, {"RequestedState": state, "Status": state})
        return {}

    async def _download(self, call: CommandCall, du: Node) -> None:
        for done in range(0, 4 * CHUNK, CHUNK):
            self.progress(call, du, "download", done, 3 * CHUNK)
            await asyncio.sleep(0.005)

    def progress(self, call: CommandCall, du: Node, stage: str, done: int = 0, total: int = -1) -> None:
        args: dict[str, Value] = {"stage": stage, "done": done, "total": total}
        self.dm.notifications.publish(Notification(Kind.PROGRESS, du.path, args=args, request_id=call.request_id))

    def announce(self, du: Node, operation: str, state: str, started: datetime, fault: Fault | None = None) -> None:
        self.dm.emit_event(
            SM + "DUStateChange!",
            {
                "UUID": du.values["UUID"],
                "DeploymentUnitRef": du.ref,
                "Version": du.values["Version"],
                "CurrentState": state,
                "Resolved": state == "Installed",
                "ExecutionUnitRefList": du.values["ExecutionUnitList"],
                "StartTime": started,
                "CompleteTime": datetime.now(UTC),
                "OperationPerformed": operation,
                "Fault.FaultCode": fault.code.usp if fault else 0,
                "Fault.FaultString": fault.message if fault else "",
            },
        )


def broken_getter(node: Node) -> Value:
    raise RuntimeError("a getter that fails unexpectedly")


class Daemon:
    """The DataModel and a ControlServer on an asyncio loop in a thread, as the dsm daemon runs them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "run" / "dsm.sock"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dsm-loop", daemon=True)
        self.thread.start()
        self.dm, self.lcm, self.server = self.run(self._start())

    async def _start(self) -> tuple[DataModel, StandInLcm, ControlServer]:
        dm = DataModel(load_schema())
        lcm = StandInLcm(dm)
        dm.on_get(BROKEN_PARAM, broken_getter)
        dm.add_row(EE, {"Name": "default", "Enable": True, "Status": "Up", "Type": "OCI", "Version": "1.0"})
        dm.add_row(EE, {"Name": "aux", "Alias": "spare", "Enable": False, "Status": "Disabled", "Type": "OCI"})
        server = ControlServer(dm, self.socket)
        await server.start()
        return dm, lcm, server

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def client(self) -> ControlClient:
        return ControlClient(str(self.socket), timeout=10)

    def stop(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="dsm-ctl-"))  # short: UNIX socket paths are limited to 107 bytes
    running = Daemon(directory)
    yield running
    running.stop()
    shutil.rmtree(directory)


def dsmcli(daemon: Daemon | None, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSM_SOCKET": str(daemon.socket) if daemon else "/nonexistent/dsm.sock"}
    return subprocess.run(
        [sys.executable, "-m", "dsm_tr181.cli", *argv], input=stdin, env=env, capture_output=True, text=True, timeout=20
    )


def raw(path: Path, payload: bytes, shut_write: bool = False) -> tuple[dict[str, Any], bool]:
    """Send bytes as an old C++ client would, read one framed reply; also say whether the server then closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        body = read_frame(sock)
        assert body is not None, "no reply"
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return json.loads(body), closed


def request(method: str, params: Mapping[str, Any] | None = None, request_id: int = 7) -> bytes:
    return encode_frame({"method": method, "id": request_id, "params": dict(params or {})})


def install(daemon: Daemon, du_uuid: str, url: str = "http://repo.example/app.tar") -> dict[str, Any]:
    params = {"ee_name": "default", "uri": url, "uuid": du_uuid}
    return daemon.client().follow("du.install", params, lambda _: None)


def new_uuid() -> str:
    return str(uuid.uuid4())


# == the socket =========================================================================================


def test_socket_is_0660_in_a_created_directory(daemon: Daemon) -> None:
    info = os.stat(daemon.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660


def test_stale_socket_replaced_live_one_refused_file_removed_on_close(daemon: Daemon) -> None:
    path = daemon.directory / "other" / "dsm.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening, closed: the file a crashed daemon leaves
    group = grp.getgrgid(os.getgid()).gr_name
    server = ControlServer(daemon.dm, path, mode=0o640, group=group)
    daemon.run(server.start())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640 and os.stat(path).st_gid == os.getgid()
    assert ControlClient(str(path)).call("ee.list") == ["default", "aux"]
    with pytest.raises(FileExistsError, match="another server"):
        daemon.run(ControlServer(daemon.dm, path).start())
    daemon.run(server.close())
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        daemon.run(ControlServer(daemon.dm, path).start())
    assert path.read_text() == "not a socket"


# == original verbs through dsmcli ==========================================================================


def test_ee_list_and_detail(daemon: Daemon) -> None:
    human = dsmcli(daemon, "ee.list")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["#", "ALIAS", "NAME", "STATUS", "ENABLE", "TYPE", "VERSION"]
    assert lines[1].split() == ["1", "cpe-1", "default", "Up", "true", "OCI", "1.0"]
    assert lines[2].split() == ["2", "spare", "aux", "Disabled", "false", "OCI"]
    as_json = json.loads(dsmcli(daemon, "--json", "ee.list").stdout)
    assert [row["name"] for row in as_json] == ["default", "aux"]
    for ident in ("aux", "2", "spare"):
        detail = dsmcli(daemon, "ee.detail", ident)
        assert detail.returncode == 0 and "path = Device.SoftwareModules.ExecEnv.2." in detail.stdout


def test_install_wait_shows_progress_and_the_final_event(daemon: Daemon) -> None:
    du_uuid = new_uuid()
    done = dsmcli(daemon, "du.install", "default", "http://repo.example/waited.tar", "--uuid", du_uuid, "--wait")
    assert done.returncode == 0, done.stderr
    progress = done.stderr.splitlines()  # not a terminal: one line per stage and state change
    assert progress[0].startswith("request ") and "accepted: Device.SoftwareModules.InstallDU()" in progress[0]
    assert progress[1].endswith(": Installing")
    assert progress[2:] == ["download... (192.0 KiB)", "unpack...", progress[1].replace("Installing", "Installed")]
    out = done.stdout
    assert f"UUID = {du_uuid}" in out and "ExecEnvRef = Device.SoftwareModules.ExecEnv.1" in out
    assert "DUStateChange.CurrentState = Installed" in out and "DUStateChange.OperationPerformed = Install" in out
    assert "DUStateChange.Fault.FaultCode = 0" in out
    as_json = json.loads(dsmcli(daemon, "--json", "du.detail", du_uuid).stdout)
    assert as_json["state"] == "Installed" and as_json["parent-ee"] == "default"


def test_install_without_wait_then_du_and_eu_verbs(daemon: Daemon) -> None:
    du_uuid = new_uuid()
    started = dsmcli(daemon, "du.install", "default", "http://repo.example/svc.tar", "--uuid", du_uuid)
    assert started.returncode == 0 and started.stdout.startswith("Installation Started (request ")
    deadline = time.monotonic() + 5
    while daemon.client().call("du.detail", {"uuid": du_uuid})["state"] != "Installed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    detail = daemon.client().call("du.detail", {"uuid": du_uuid})
    assert list(detail)[:6] == ["URI", "UUID", "parent-ee", "state", "eu", "eu.path"]
    number, alias, euid = str(detail["instance"]), detail["Alias"], detail["eu"]
    for ident in (du_uuid, number, alias):
        shown = dsmcli(daemon, "du.detail", ident)
        assert shown.returncode == 0 and "URI = http://repo.example/svc.tar" in shown.stdout
        assert f"eu = {euid}" in shown.stdout
    listed = dsmcli(daemon, "du.list").stdout.splitlines()
    assert listed[0].split() == ["#", "ALIAS", "UUID", "NAME", "VERSION", "STATUS", "EE", "EUS"]
    assert [number, alias, du_uuid, "svc", "1.0", "Installed", "default", euid] in [line.split() for line in listed]
    assert du_uuid in daemon.client().call("du.list")  # the original shape: UUIDs
    eus = dsmcli(daemon, "eu.list").stdout.splitlines()
    assert eus[0].split() == ["#", "ALIAS", "EUID", "NAME", "VERSION", "STATUS", "EE", "DU"]
    assert any(line.split()[2:] == [euid, "svc", "1.0", "Idle", "default", du_uuid] for line in eus[1:])
    eu = dsmcli(daemon, "eu.detail", euid)
    assert eu.returncode == 0 and f"uid = {euid}" in eu.stdout and f"du = {du_uuid}" in eu.stdout
    assert dsmcli(daemon, "eu.start", euid).stdout == "Starting EU\n"
    assert daemon.client().call("eu.detail", {"uid": euid})["status"] == "Active"
    assert dsmcli(daemon, "eu.stop", euid).stdout == "Stopping EU\n"
    assert daemon.client().call("eu.detail", {"uid": euid})["status"] == "Idle"
    saved = dsmcli(daemon, "dsm.save_state")
    assert saved.returncode == 0 and "journaled continuously" in saved.stdout


def test_update_and_uninstall_with_wait(daemon: Daemon) -> None:
    du_uuid = new_uuid()
    install(daemon, du_uuid)
    updated = dsmcli(daemon, "du.update", du_uuid, "http://repo.example/app-2.tar", "--wait")
    assert updated.returncode == 0, updated.stderr
    assert "DUStateChange.OperationPerformed = Update" in updated.stdout
    assert "DUStateChange.Version = 2.0" in updated.stdout
    assert "download..." in updated.stderr and updated.stderr.rstrip().endswith(": Installed")
    assert daemon.client().call("du.detail", {"uuid": du_uuid})["URL"] == "http://repo.example/app-2.tar"
    removed = dsmcli(daemon, "du.uninstall", du_uuid, "--wait")
    assert removed.returncode == 0, removed.stderr
    assert "DUStateChange.CurrentState = Uninstalled" in removed.stdout
    assert ": Uninstalling" in removed.stderr
    gone = dsmcli(daemon, "du.detail", du_uuid)
    assert gone.returncode == 1 and "error 7016 Unknown Deployment Unit" in gone.stderr and du_uuid in gone.stderr


def test_failed_install_reports_the_fault_and_its_event(daemon: Daemon) -> None:
    failed = dsmcli(daemon, "du.install", "default", "http://repo.example/corrupt.tar", "--wait")
    assert failed.returncode == 1
    assert "error 7035 Corrupt Data" in failed.stderr and "not a tar file" in failed.stderr
    assert "Traceback" not in failed.stderr
    params = {"ee_name": "default", "uri": "http://repo.example/corrupt2.tar", "wait": True}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(request("du.install", params))
        messages = []
        while (body := read_frame(sock)) is not None:
            messages.append(json.loads(body))
    assert all("progress" in m for m in messages[:-1])
    final = messages[-1]
    assert final["id"] == 7 and final["fault"]["code"] == 7035
    assert final["DUStateChange"]["Fault.FaultCode"] == "7035" and final["DUStateChange"]["CurrentState"] == "Failed"


def test_unknown_ee_and_du_are_clear_errors(daemon: Daemon) -> None:
    no_ee = dsmcli(daemon, "du.install", "nowhere", "http://repo.example/x.tar")
    assert no_ee.returncode == 1
    assert "error 7223 Unknown Execution Environment at Device.SoftwareModules.ExecEnv." in no_ee.stderr
    assert "'nowhere'" in no_ee.stderr
    no_du = dsmcli(daemon, "du.uninstall", "99")
    assert no_du.returncode == 1 and "error 7016 Unknown Deployment Unit" in no_du.stderr
    no_eu = dsmcli(daemon, "eu.start", "ghost")
    assert no_eu.returncode == 1 and "error 7016" in no_eu.stderr
    duplicate = new_uuid()
    install(daemon, duplicate)
    again = dsmcli(daemon, "du.install", "default", "http://repo.example/app.tar", "--uuid", duplicate)
    assert again.returncode == 1 and "7025" in again.stderr


# == generic verbs =========================================================================================


def test_get_set_add_delete(daemon: Daemon) -> None:
    got = dsmcli(daemon, "get", f"{EE}1.Name", f"{SM}ExecEnvNumberOfEntries")
    assert got.stdout == f"{EE}1.Name = default\n{SM}ExecEnvNumberOfEntries = 2\n"
    tree = dsmcli(daemon, "get", "Device.SoftwareModules.ExecEnv.2.")
    assert "Device.SoftwareModules.ExecEnv.2.Enable = false" in tree.stdout
    shallow = json.loads(dsmcli(daemon, "--json", "get", "Device.SoftwareModules.", "--max-depth", "1").stdout)
    tables = ("ExecEnvClass", "ExecEnv", "DeploymentUnit", "ExecutionUnit")
    assert set(shallow) == {f"{SM}{name}NumberOfEntries" for name in tables}
    written = dsmcli(daemon, "set", "Device.SoftwareModules.ExecEnv.2.InitialRunLevel=5")
    assert written.returncode == 0 and written.stdout == "Device.SoftwareModules.ExecEnv.2.InitialRunLevel = 5\n"
    read_only = dsmcli(daemon, "set", "Device.SoftwareModules.ExecEnv.2.Name=x")
    assert read_only.returncode == 1 and "error 7013" in read_only.stderr
    bad_type = dsmcli(daemon, "set", "Device.SoftwareModules.ExecEnv.2.InitialRunLevel=high")
    assert bad_type.returncode == 1 and "error 7011 Invalid type" in bad_type.stderr
    partial = dsmcli(daemon, "set", "--allow-partial", f"{EE}2.InitialRunLevel=6", f"{EE}2.Name=x")
    assert partial.returncode == 1 and partial.stdout == f"{EE}2.InitialRunLevel = 6\n" and "7013" in partial.stderr
    not_creatable = dsmcli(daemon, "add", "Device.SoftwareModules.ExecEnv.", "Name=x")
    assert not_creatable.returncode == 1 and "error 7019" in not_creatable.stderr
    not_deletable = dsmcli(daemon, "delete", "Device.SoftwareModules.ExecEnv.2.")
    assert not_deletable.returncode == 1 and "error 7024 Delete failure" in not_deletable.stderr
    bad_path = dsmcli(daemon, "get", "Device.SoftwareModules..")
    assert bad_path.returncode == 1 and "error 7008 Invalid path syntax" in bad_path.stderr


def test_operate_supported_instances(daemon: Daemon) -> None:
    du_uuid = new_uuid()
    command = f"{SM}InstallDU()"
    args = ["URL=http://repo.example/op.tar", "ExecutionEnvRef=Device.SoftwareModules.ExecEnv.1", f"UUID={du_uuid}"]
    waited = dsmcli(daemon, "operate", command, *args, "--wait")
    assert waited.returncode == 0, waited.stderr
    assert f"UUID = {du_uuid}" in waited.stdout and "DUStateChange.CurrentState = Installed" in waited.stdout
    euid = daemon.client().call("du.detail", {"uuid": du_uuid})["eu"]
    eu_path = daemon.client().call("eu.detail", {"uid": euid})["path"]
    sync = dsmcli(daemon, "--json", "operate", f"{eu_path}SetRequestedState()", "RequestedState=Active")
    assert sync.returncode == 0 and json.loads(sync.stdout) == {}
    assert daemon.client().call("eu.detail", {"uid": euid})["status"] == "Active"
    bad_arg = dsmcli(daemon, "operate", f"{eu_path}SetRequestedState()", "RequestedState=Sleeping")
    assert bad_arg.returncode == 1 and "7027" in bad_arg.stderr
    detail = daemon.client().call("du.detail", {"uuid": du_uuid})
    started = dsmcli(daemon, "--json", "operate", f"{detail['path']}Uninstall()")
    assert json.loads(started.stdout).keys() == {"command", "request_id"}
    supported = dsmcli(daemon, "supported", f"{DU}{{i}}.")
    assert supported.returncode == 0
    assert f"{DU}{{i}}.  table, read-only, keys UUID,Version,ExecutionEnvRef | Alias" in supported.stdout
    assert "  Update()  async  in: URL," in supported.stdout and "  UUID  UUID(36..36)  read-only" in supported.stdout
    instances = dsmcli(daemon, "instances", EE)
    assert instances.stdout.splitlines()[:2] == [f"{EE}1.  Alias=cpe-1 Name=default", f"{EE}2.  Alias=spare Name=aux"]


def test_events_stream_until_interrupted(daemon: Daemon) -> None:
    env = {**os.environ, "DSM_SOCKET": str(daemon.socket)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "dsm_tr181.cli", "events", EE],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stderr is not None and follower.stdout is not None
        assert follower.stderr.readline().startswith(f"following notifications under {EE}")
        daemon.client().call("set", {"values": {f"{EE}2.InitialRunLevel": "9"}})
        daemon.client().call("set", {"values": {f"{EE}2.InitialRunLevel": "10"}})
        assert follower.stdout.readline() == f"ValueChange {EE}2.InitialRunLevel = 9\n"
        assert follower.stdout.readline() == f"ValueChange {EE}2.InitialRunLevel = 10\n"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
    finally:
        follower.kill()
        follower.wait()


def test_events_carry_progress_events_and_operation_complete(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket))
        sock.sendall(request("events", {"prefix": SM}))
        assert json.loads(read_frame(sock) or b"") == {"id": 7, "result": {"subscribed": SM}}
        du_uuid = new_uuid()
        install(daemon, du_uuid)
        kinds: list[str] = []
        while "OperationComplete" not in kinds:
            event = json.loads(read_frame(sock) or b"")["event"]
            kinds.append(event["kind"])
            assert event.keys() >= {"kind", "path", "request_id", "fault"}
            if event["kind"] == "Event":
                assert event["args"]["UUID"] == du_uuid and event["args"]["CurrentState"] == "Installed"
            if event["kind"] == "OperationComplete":
                assert event["args"]["UUID"] == du_uuid and event["fault"] is None
    assert {"ObjectCreation", "ValueChange", "Progress", "Event"} <= set(kinds)


# == bad input ==============================================================================================


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        (HEADER.pack(6) + b"{nope}", 7000, "malformed JSON"),
        (HEADER.pack(2 << 20), 7005, f"frame of {2 << 20} bytes exceeds the limit of {1 << 20}"),
        (HEADER.pack(-5), 7000, "bad frame length -5"),
        (HEADER.pack(100) + b'{"method"', 7000, "truncated frame: 9 of 100 bytes"),
        (encode_frame(["ee.list"]), 7000, "must be a JSON object"),
        (encode_frame({"id": 7, "params": {}}), 7000, "no method name"),
        (request("du.reassign"), 7001, "'du.reassign' is not implemented"),
        (encode_frame({"method": "ee.list", "id": 7, "params": []}), 7004, "params must be a JSON object"),
        (request("get", {"paths": 5}), 7004, "'paths' must be a non-empty list of strings"),
        (request("du.detail", {"uuid": 12}), 7004, "'uuid' must be a string"),
        (request("du.detail"), 7004, "missing parameter 'uuid'"),
        (request("get", {"paths": [SM], "max_depth": -1}), 7004, "'max_depth' must be a non-negative integer"),
        (request("set", {"values": {f"{EE}1.Enable": True}}), 7004, "'values' must be an object of strings"),
        (request("du.install", {"ee_name": "default", "uri": "http://x/y.tar", "wait": "yes"}), 7004, "true or false"),
        (request("get", {"paths": [BROKEN_PARAM]}), 7003, "internal error"),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    daemon: Daemon, payload: bytes, code: int, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    reply, closed = raw(daemon.socket, payload, shut_write=True)
    assert reply["fault"]["code"] == code and text in reply["error"], reply
    assert "Traceback" not in json.dumps(reply)
    assert closed
    if code == 7003:
        assert "RuntimeError: a getter that fails unexpectedly" in caplog.text  # logged here, not sent
    assert daemon.client().call("ee.list") == ["default", "aux"]


def test_frame_limit_and_read_timeout_are_configurable(daemon: Daemon) -> None:
    path = daemon.directory / "strict" / "dsm.sock"
    server = ControlServer(daemon.dm, path, max_frame=64, read_timeout=0.2)
    daemon.run(server.start())
    try:
        assert ControlClient(str(path)).call("ee.list") == ["default", "aux"]
        reply, _ = raw(path, request("get", {"paths": [f"{EE}1.", f"{EE}2."]}))
        assert reply["fault"]["code"] == 7005 and "exceeds the limit of 64" in reply["error"]
        reply, closed = raw(path, HEADER.pack(20) + b"{")
        assert reply["fault"]["code"] == 7000 and "no complete request within 0.2 s" in reply["error"]
        assert closed
    finally:
        daemon.run(server.close())


def test_silent_and_slow_clients_do_not_block_others(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(daemon.socket))
        silent.sendall(HEADER.pack(50))  # then nothing
        assert daemon.client().call("ee.list") == ["default", "aux"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.connect(str(daemon.socket))
    assert daemon.client().call("eu.list") is not None


# == compatibility, credentials, reachability =================================================================


def test_old_clients_get_exactly_one_reply_for_every_method(daemon: Daemon) -> None:
    du_uuid = new_uuid()
    install(daemon, du_uuid)
    euid = daemon.client().call("du.detail", {"uuid": du_uuid})["eu"]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("ee.list", {}),
        ("ee.detail", {"name": "default"}),
        ("du.list", {}),
        ("du.list", {"detailed": True}),
        ("du.detail", {"uuid": du_uuid}),
        ("eu.list", {}),
        ("eu.detail", {"uid": euid}),
        ("eu.start", {"uid": euid}),
        ("eu.stop", {"uid": euid}),
        ("dsm.save_state", {}),
        ("get", {"paths": [EE]}),
        ("set", {"values": {f"{EE}2.InitialRunLevel": "1"}}),
        ("add", {"path": EE}),
        ("delete", {"paths": [f"{EE}2."]}),
        ("operate", {"command": f'{EU}[EUID=="{euid}"].SetRequestedState()', "args": {"RequestedState": "Idle"}}),
        ("supported", {"paths": [SM], "first_level_only": True}),
        ("instances", {"paths": [EE]}),
        ("du.install", {"ee_name": "default", "uri": "http://repo.example/old.tar"}),
        ("du.update", {"uuid": du_uuid}),
        ("du.uninstall", {"uuid": new_uuid()}),
    ]
    for method, params in calls:
        reply, closed = raw(daemon.socket, request(method, params, request_id=42))
        assert reply["id"] == 42 and ("result" in reply) != ("error" in reply), (method, reply)
        assert closed, method
    started, _ = raw(daemon.socket, request("du.install", {"ee_name": "default", "uri": "http://repo.example/x.tar"}))
    assert started["result"]["response"] == "Installation Started"
    events, closed = raw(daemon.socket, request("events"))
    assert events["result"] == {"subscribed": ""} and not closed


def test_credentials_reach_the_lcm_but_are_never_logged_or_echoed(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "pa55-" + uuid.uuid4().hex
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\n")
    from_file, from_stdin = new_uuid(), new_uuid()
    by_file = dsmcli(
        daemon, "du.install", "default", "http://repo.example/private.tar", "--uuid", from_file,
        "--username", "fetcher", "--password-file", str(password_file), "--wait",
    )  # fmt: skip
    by_stdin = dsmcli(
        daemon, "--json", "du.install", "default", "http://repo.example/private2.tar", "--uuid", from_stdin,
        "--password-stdin", stdin=secret + "\n",
    )  # fmt: skip
    assert by_file.returncode == 0 and by_stdin.returncode == 0, by_file.stderr + by_stdin.stderr
    assert daemon.lcm.credentials[from_file] == ("fetcher", secret)
    assert daemon.lcm.credentials[from_stdin] == ("", secret)
    shown = by_file.stdout + by_file.stderr + by_stdin.stdout + by_stdin.stderr
    detail = json.dumps(daemon.client().call("du.detail", {"uuid": from_file}))
    assert secret not in shown and secret not in detail and secret not in caplog.text


def test_unreachable_daemon_and_usage_errors(tmp_path: Path) -> None:
    unreachable = dsmcli(None, "ee.list")
    assert unreachable.returncode == 3
    assert unreachable.stderr == (
        "dsmcli: cannot reach the dsm daemon at /nonexistent/dsm.sock: No such file or directory\n"
    )
    assert dsmcli(None, "du.detail").returncode == 2
    assert dsmcli(None, "set", "no-equals-sign").returncode == 2
    missing_password = str(tmp_path / "none")
    assert dsmcli(None, "du.install", "default", "http://x/y.tar", "--password-file", missing_password).returncode == 2
    assert dsmcli(None, "--local", "du.list").returncode == 2
