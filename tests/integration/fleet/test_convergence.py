"""Devices converging to the repository: a real ``dsm-fleet serve`` over HTTPS, two real
``dsm`` daemons with different labels installing real DU archives from it and running them
as real runc containers, every step through the TR-181 tree."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.integration.lcm_helpers import DU, EU, build_du, install, needs_runc, rows
from tests.support.daemon import DsmDaemon
from tests.support.fleetserver import FleetServer
from tests.support.httpserver import FileServer, TlsFiles

pytestmark = [pytest.mark.integration, needs_runc]
FLEET = "Device.SoftwareModules.X_RDK_Fleet."
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, KeyError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def device(tmp_path: Path, fleet: FleetServer, tls: TlsFiles, name: str, labels: str) -> DsmDaemon:
    work = tmp_path / name
    work.mkdir()
    (work / "token").write_text(fleet.token(name, "device") + "\n")
    section = {"enable": True, "url": fleet.url, "token_file": str(work / "token"), "ca_file": str(tls.ca_cert),
               "labels": labels, "firmware_key": "fw-7", "interval": 1.0, "jitter": 0.1, "retry_min": 0.5,
               "retry_max": 2.0}  # fmt: skip
    return DsmDaemon(work, extra={"fleet": section, "packager.tar": {"ca_file": str(tls.ca_cert)}})


def apps(dsm: DsmDaemon) -> dict[str, dict[str, str]]:
    """DU name -> its row (text values) and its EU's Status."""
    out = {}
    for path in rows(dsm, DU):
        values = dsm.get(path)
        du = {k[len(path) :]: v for k, v in values.items() if "." not in k[len(path) :]}
        eu = du["ExecutionUnitList"].split(",")[0]
        du["EUStatus"] = dsm.get(eu + ".Status")[eu + ".Status"] if eu else ""
        out[du["Name"]] = du
    return out


def fleet_state(dsm: DsmDaemon) -> dict[str, str]:
    return {k[len(FLEET) :]: v for k, v in dsm.get(FLEET).items()}


@pytest.fixture
def daemons() -> Iterator[list[DsmDaemon]]:
    started: list[DsmDaemon] = []
    yield started
    for dsm in started:
        dsm.cleanup()


def push(fleet: FleetServer, archive: Path, name: str, labels: str, *extra: str) -> dict[str, Any]:
    out = fleet.cli("package", "push", str(archive), "--name", name, "--labels", labels, *extra)
    return json.loads(out.stdout)


def apply(fleet: FleetServer, tmp_path: Path, text: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    fleet.cli("spec", "apply", "-f", str(spec))


def test_two_devices_converge_by_labels(
    tmp_path: Path, fleet: FleetServer, fleet_tls: TlsFiles, daemons: list[DsmDaemon]
) -> None:
    push(fleet, build_du(tmp_path, "hello", "1.0.0"), "hello", "")
    push(fleet, build_du(tmp_path, "hello", "1.5.0"), "hello", "arch=amd64,fleet=us")
    push(fleet, build_du(tmp_path, "worker", "1.0.0"), "worker", "firmware=fw-7")
    apply(fleet, tmp_path, "id: base\napps: [{name: hello}]\n---\nid: eu\ntarget: {fleet: eu}\n"
          "apps: [{name: worker, start: false}]\n")  # fmt: skip

    # a controller's DU on device eu, installed before the fleet client runs, stays untouched
    served = tmp_path / "served"
    own = build_du(tmp_path, "mine", "1.0.0", out=served / "mine.tar")
    eu, us = device(tmp_path, fleet, fleet_tls, "eu", "fleet=eu"), device(tmp_path, fleet, fleet_tls, "us", "fleet=us")
    daemons += [eu, us]
    with FileServer(served) as files:
        eu.start()
        assert install(eu, files.url(own.name)).ok
    us.start()

    eventually(lambda: fleet_state(eu)["Status"] == "Converged", what="eu converged")
    eventually(lambda: fleet_state(us)["Status"] == "Converged", what="us converged")
    on_eu, on_us = apps(eu), apps(us)
    assert {n: (a["Version"], a["EUStatus"]) for n, a in on_eu.items()} == {
        "hello": ("1.0.0", "Active"), "worker": ("1.0.0", "Idle"), "mine": ("1.0.0", "Idle"),
    }  # fmt: skip
    assert {n: (a["Version"], a["EUStatus"]) for n, a in on_us.items()} == {"hello": ("1.5.0", "Active")}
    assert len(eu.containers()) == 1 and len(us.containers()) == 1  # real runc containers
    assert fleet_state(eu)["Labels"] == "fleet=eu" and fleet_state(eu)["LastError"] == ""
    devices = {d["id"]: d for d in json.loads(fleet.cli("devices", "--json").stdout)}
    assert devices["eu"]["converged"] and devices["us"]["converged"]
    assert devices["us"]["labels"] == {"arch": "amd64", "execenv": "default", "firmware": "fw-7", "fleet": "us"}

    # spec change -> re-convergence: worker started on eu
    events = eu.events("Device.SoftwareModules.")
    apply(fleet, tmp_path, "id: eu\ntarget: {fleet: eu}\napps: [{name: worker, start: true}]\n")
    eventually(lambda: apps(eu)["worker"]["EUStatus"] == "Active", what="worker started")
    # a new version of a package -> Update() of the same DU (same instance, no second DU)
    before = apps(eu)["hello"]
    push(fleet, build_du(tmp_path, "hello", "2.0.0"), "hello", "", "--replace")
    args = events.du_state_change("Update")
    assert args["CurrentState"] == "Installed" and args["Fault.FaultCode"] == "0"
    after = eventually(lambda: (a := apps(eu)) and a["hello"]["Version"] == "2.0.0" and a, what="hello 2.0.0 on eu")
    assert after["hello"]["UUID"] == before["UUID"] and len(rows(eu, DU)) == 3
    eventually(lambda: apps(eu)["hello"]["EUStatus"] == "Active", what="hello 2 running")
    assert apps(us)["hello"]["Version"] == "1.5.0"  # us has its more specific package

    # package removal -> uninstall (and the missing package reported)
    worker = next(p for p in json.loads(fleet.cli("package", "list").stdout) if p["name"] == "worker")
    fleet.cli("package", "rm", worker["id"])
    assert events.du_state_change("Uninstall")["CurrentState"] == "Uninstalled"
    eventually(lambda: "worker" not in apps(eu), what="worker uninstalled")
    eventually(lambda: "no package worker" in fleet_state(eu)["LastError"], what="nomatch reported")
    assert "mine" in apps(eu)  # the controller's DU was never touched

    # a conflict: the device keeps what it has and shows the error; so does dsm-fleet devices
    apply(fleet, tmp_path, "id: us-gold\ntarget: {fleet: us}\napps: [{name: hello, labels: {tier: gold}}]\n")
    eventually(lambda: "conflicting specs" in fleet_state(us)["LastError"], what="conflict on us")
    assert fleet_state(us)["Status"] == "Error" and apps(us)["hello"]["Version"] == "1.5.0"
    table = fleet.cli("devices").stdout
    assert "spec base" in table and "spec us-gold" in table


def test_kill9_mid_convergence_resumes_without_duplicates(
    tmp_path: Path, fleet: FleetServer, fleet_tls: TlsFiles, daemons: list[DsmDaemon]
) -> None:
    push(fleet, build_du(tmp_path, "hello", "1.0.0"), "hello", "")
    push(fleet, build_du(tmp_path, "worker", "1.0.0"), "worker", "")
    apply(fleet, tmp_path, "id: base\napps: [{name: hello}, {name: worker}]\n")
    dsm = device(tmp_path, fleet, fleet_tls, "d1", "fleet=eu")
    daemons.append(dsm)
    for step in ("install.unpacked", "install.committed"):  # before and after the LCM's commit
        with contextlib.suppress(RuntimeError):  # it may die before it says READY
            dsm.start(env={"DSM_CRASH_AT": step})
        assert dsm.wait_exit(60) == -9, dsm.log()
        journal = json.loads((dsm.state / "fleet.json").read_text())
        assert journal["owned"]["hello"]["phase"] == "installing"
    dsm.start()
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged", what="converged after the crashes")
    on = apps(dsm)
    assert sorted(on) == ["hello", "worker"] and len(rows(dsm, DU)) == 2 and len(rows(dsm, EU)) == 2
    # Converged means every EU was asked to run; their starts may still be under way.
    eventually(lambda: all(a["EUStatus"] == "Active" for a in apps(dsm).values()), what="both EUs active")
    assert len(dsm.containers()) == 2
    journal = json.loads((dsm.state / "fleet.json").read_text())
    assert {app: e["phase"] for app, e in journal["owned"].items()} == {"hello": "installed", "worker": "installed"}
    # the server restarting loses nothing: the device polls it again and stays converged
    synced = fleet_state(dsm)["LastSync"]
    fleet.kill9()
    fleet.start()
    eventually(lambda: fleet_state(dsm)["LastSync"] > synced, what="a sync after the server restart")
    assert fleet_state(dsm)["Status"] == "Converged" and len(rows(dsm, DU)) == 2
    assert json.loads(fleet.cli("devices", "--json").stdout)[0]["converged"] is True
