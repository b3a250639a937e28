"""Devices converging to the repository: a real ``dsm-fleet serve`` over HTTPS, two real
``dsm`` daemons with different labels installing real DU archives from it and running them
as real runc containers, every step through the TR-181 tree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsm_tr181.control_client import DaemonError
from tests.integration.lcm_helpers import DU, EU, build_du, install, needs_runc, operate, rows, set_values
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
        except (AssertionError, KeyError, DaemonError) as exc:  # DaemonError: a row gone while read
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def device(tmp_path: Path, fleet: FleetServer, tls: TlsFiles, name: str, labels: str) -> DsmDaemon:
    work = tmp_path / name
    work.mkdir()
    (work / "token").write_text(fleet.token(name, "device", labels) + "\n")
    section = {"enable": True, "url": fleet.url, "token_file": str(work / "token"), "ca_file": str(tls.ca_cert),
               "labels": labels, "firmware_key": "fw-7", "interval": 0.5, "jitter": 0.1, "retry_min": 0.3,
               "retry_max": 1.0}  # fmt: skip
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


def test_two_devices_converge_by_labels(
    tmp_path: Path, fleet: FleetServer, fleet_tls: TlsFiles, daemons: list[DsmDaemon]
) -> None:
    fleet.push(build_du(tmp_path, "hello", "1.0.0"), "hello", "")
    fleet.push(build_du(tmp_path, "hello", "1.5.0"), "hello", "arch=amd64,fleet=us")
    fleet.push(build_du(tmp_path, "worker", "1.0.0"), "worker", "firmware=fw-7")
    fleet.apply("id: base\napps: [{name: hello}]\n---\nid: eu\ntarget: {fleet: eu}\n"
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
    on_eu, on_us = apps(eu), apps(us)  # Converged: the EUs are in their run intent, not only asked to be
    assert {n: (a["Version"], a["EUStatus"]) for n, a in on_eu.items()} == {
        "hello": ("1.0.0", "Active"), "worker": ("1.0.0", "Idle"), "mine": ("1.0.0", "Idle"),
    }  # fmt: skip
    assert {n: (a["Version"], a["EUStatus"]) for n, a in on_us.items()} == {"hello": ("1.5.0", "Active")}
    assert len(eu.containers()) == 1 and len(us.containers()) == 1  # real runc containers
    assert fleet_state(eu)["Labels"] == "fleet=eu" and fleet_state(eu)["LastError"] == ""
    devices = {d["id"]: d for d in fleet.client().request("GET", "/v1/devices").json()}
    assert devices["eu"]["converged"] and devices["us"]["converged"]
    assert devices["us"]["labels"] == {"arch": "amd64", "execenv": "default", "firmware": "fw-7", "fleet": "us"}
    # nothing changed: the devices poll with the answer's ETag and are told so (304), and do nothing
    eventually(lambda: fleet.log().count('"POST /v1/resolve HTTP/1.1" 304') >= 4, what="polls answered 304")
    assert len(rows(eu, DU)) == 3 and len(rows(us, DU)) == 1

    # spec change -> re-convergence: worker started on eu
    events = eu.events("Device.SoftwareModules.")
    fleet.apply("id: eu\ntarget: {fleet: eu}\napps: [{name: worker, start: true}]\n")
    eventually(lambda: apps(eu)["worker"]["EUStatus"] == "Active", what="worker started")
    # a new version of a package -> Update() of the same DU (same instance, no second DU)
    before = apps(eu)["hello"]
    fleet.push(build_du(tmp_path, "hello", "2.0.0"), "hello", replace=True)
    args = events.du_state_change("Update")
    assert args["CurrentState"] == "Installed" and args["Fault.FaultCode"] == "0"
    after = eventually(lambda: (a := apps(eu)) and a["hello"]["Version"] == "2.0.0" and a, what="hello 2.0.0 on eu")
    assert after["hello"]["UUID"] == before["UUID"] and len(rows(eu, DU)) == 3
    eventually(lambda: apps(eu)["hello"]["EUStatus"] == "Active", what="hello 2 running")
    assert apps(us)["hello"]["Version"] == "1.5.0"  # us has its more specific package

    # package removal -> uninstall (and the missing package reported)
    worker = next(p for p in fleet.client().request("GET", "/v1/packages").json() if p["name"] == "worker")
    fleet.client().request("DELETE", f"/v1/packages/{worker['id']}")
    assert events.du_state_change("Uninstall")["CurrentState"] == "Uninstalled"
    eventually(lambda: "worker" not in apps(eu), what="worker uninstalled")
    eventually(lambda: "no package worker" in fleet_state(eu)["LastError"], what="nomatch reported")
    assert "mine" in apps(eu)  # the controller's DU was never touched

    # a conflict: the device keeps what it has and shows the error; so does dsm-fleet devices
    fleet.apply("id: us-gold\ntarget: {fleet: us}\napps: [{name: hello, labels: {tier: gold}}]\n")
    eventually(lambda: "conflicting specs" in fleet_state(us)["LastError"], what="conflict on us")
    assert fleet_state(us)["Status"] == "Error" and apps(us)["hello"]["Version"] == "1.5.0"
    table = fleet.cli("devices").stdout
    assert "spec base" in table and "spec us-gold" in table
    # a tie between equally specific packages: likewise left as it is, and reported
    fleet.client().request("DELETE", "/v1/specs/us-gold")
    fleet.push(build_du(tmp_path, "hello", "1.6.0"), "hello", "arch=amd64,firmware=fw-7")
    eventually(lambda: "tie between" in fleet_state(us)["LastError"], what="tie on us")
    assert apps(us)["hello"]["Version"] == "1.5.0" and len(rows(us, DU)) == 1


def test_kill9_mid_convergence_resumes_without_duplicates(
    tmp_path: Path, fleet: FleetServer, fleet_tls: TlsFiles, daemons: list[DsmDaemon]
) -> None:
    fleet.push(build_du(tmp_path, "hello", "1.0.0"), "hello", "")
    fleet.push(build_du(tmp_path, "worker", "1.0.0"), "worker", "")
    fleet.apply("id: base\napps: [{name: hello}, {name: worker}]\n")
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
    assert all(a["EUStatus"] == "Active" for a in on.values())
    assert len(dsm.containers()) == 2
    journal = json.loads((dsm.state / "fleet.json").read_text())
    assert {app: e["phase"] for app, e in journal["owned"].items()} == {"hello": "installed", "worker": "installed"}

    # killed in the middle of an Update(): resumed, still one DU per app
    dsm.stop()
    dsm.start(env={"DSM_CRASH_AT": "update.swapped"})
    fleet.push(build_du(tmp_path, "hello", "2.0.0"), "hello", replace=True)
    assert dsm.wait_exit(60) == -9, dsm.log()
    assert json.loads((dsm.state / "fleet.json").read_text())["owned"]["hello"]["phase"] == "updating"
    dsm.start()
    eventually(lambda: apps(dsm)["hello"]["Version"] == "2.0.0", what="hello 2.0.0 after the crash")
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged", what="converged after the update crash")
    assert len(rows(dsm, DU)) == 2 and apps(dsm)["hello"]["UUID"] == on["hello"]["UUID"]
    # a package by reference whose archive is missing at first: the Update() fails, is reported
    # and retried with backoff until the archive is there; the device token never goes there
    served = tmp_path / "elsewhere"
    served.mkdir()
    archive = build_du(tmp_path, "hello", "3.0.0")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    with FileServer(served) as files:
        body = {"name": "hello", "version": "3.0.0", "url": files.url("hello-3.tar"), "sha256": sha256}
        fleet.client().request("POST", "/v1/packages?replace=true", body)
        eventually(lambda: "hello: " in fleet_state(dsm)["LastError"], what="the failed Update() reported")
        assert apps(dsm)["hello"]["Version"] == "2.0.0"
        shutil.copy(archive, served / "hello-3.tar")
        eventually(lambda: apps(dsm)["hello"]["Version"] == "3.0.0", what="the Update() retried")
        assert all(request.authorization == "" for request in files.requests)
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged", what="converged on 3.0.0")

    # an app dropped from the specs is uninstalled
    fleet.apply("id: base\napps: [{name: hello}]\n")
    eventually(lambda: sorted(apps(dsm)) == ["hello"], what="worker uninstalled")
    assert list(json.loads((dsm.state / "fleet.json").read_text())["owned"]) == ["hello"]

    # the repository gone: an error on the device, retried with backoff; back: nothing lost
    synced = fleet_state(dsm)["LastSync"]
    fleet.kill9()
    eventually(lambda: "repository" in fleet_state(dsm)["LastError"], what="the outage reported")
    assert fleet_state(dsm)["Status"] == "Error"
    fleet.start()
    eventually(lambda: fleet_state(dsm)["LastSync"] > synced, what="a sync after the server restart")
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged", what="converged again")
    assert len(rows(dsm, DU)) == 1 and fleet_state(dsm)["LastError"] == ""
    assert fleet.client().request("GET", "/v1/devices").json()[0]["converged"] is True

    # Labels and Enable set through the tree (as a controller would): acted on and kept
    set_values(dsm, {FLEET + "Labels": "fleet=eu,tier=gold"})
    eventually(lambda: fleet.client().request("GET", "/v1/devices").json()[0]["labels"].get("tier") == "gold",
               what="the new labels reach the repository")  # fmt: skip
    # the token is bound to fleet=eu: claiming another fleet is refused, and shown
    set_values(dsm, {FLEET + "Labels": "fleet=us"})
    eventually(lambda: "bound to {'fleet': 'eu'}" in fleet_state(dsm)["LastError"], what="another fleet refused")
    set_values(dsm, {FLEET + "Enable": False})
    eventually(lambda: fleet_state(dsm)["Status"] == "Disabled", what="disabled")
    assert json.loads((dsm.state / "fleet.json").read_text())["overrides"]["Labels"] == "fleet=us"
    dsm.stop()
    dsm.start()
    assert fleet_state(dsm)["Enable"] == "false" and fleet_state(dsm)["Labels"] == "fleet=us"


def test_an_eu_that_does_not_start_is_not_converged(
    tmp_path: Path, fleet: FleetServer, fleet_tls: TlsFiles, daemons: list[DsmDaemon]
) -> None:
    fleet.push(build_du(tmp_path, "app", "1.0.0", args=["/bin/no-such-program"]), "app")
    fleet.apply("id: base\napps: [{name: app}]\n")
    dsm = device(tmp_path, fleet, fleet_tls, "d1", "fleet=eu")
    daemons.append(dsm)
    dsm.start()
    error = eventually(lambda: "wanted Active" in (e := fleet_state(dsm)["LastError"]) and e, what="start failure")
    assert "app: Device.SoftwareModules.ExecutionUnit.1 is Idle" in error and "FailureOnStart" in error
    assert fleet_state(dsm)["Status"] == "Error" and apps(dsm)["app"]["EUStatus"] == "Idle"
    eventually(lambda: fleet.client().request("GET", "/v1/devices").json()[0]["last_error"], what="reported")
    assert fleet.client().request("GET", "/v1/devices").json()[0]["converged"] is False
    # a fixed package: updated, started, and only then Converged
    fleet.push(build_du(tmp_path, "app", "1.0.1"), "app", replace=True)
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged", what="converged on the fixed package")
    assert apps(dsm)["app"]["EUStatus"] == "Active" and apps(dsm)["app"]["Version"] == "1.0.1"
    # stopped behind the fleet's back (a controller, or a crash): started again at the next poll
    assert operate(dsm, EU + "1.SetRequestedState()", {"RequestedState": "Idle"}).ok
    eventually(lambda: fleet_state(dsm)["Status"] == "Converged" and apps(dsm)["app"]["EUStatus"] == "Active"
               and "is Idle, wanted Active" in fleet.log() + dsm.log(), what="started again")  # fmt: skip
