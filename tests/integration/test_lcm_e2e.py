"""Device.SoftwareModules. end to end: the real ``dsm`` daemon, real runc containers, real
HTTP and HTTPS servers on 127.0.0.1 and DU archives built here.

One daemon serves the whole module (starting one costs more than most checks); every
test leaves it with no DU, and a finalizer uninstalls what a failing test left behind,
so a failure does not cascade. Tests that need a daemon restart restart that one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import oci_config

from dsm_tr181.errors import FaultCode
from dsm_tr181.lcm.identity import annex_c_uuid
from tests.integration.lcm_helpers import (
    DU,
    EE1,
    EU,
    SM,
    Outcome,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    row,
    rows,
    runc_state,
    running_rootfs,
    set_values,
    top_entries,
    tree_files,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer, TlsFiles, make_tls_files

pytestmark = [pytest.mark.integration, needs_runc]

USER, PASSWORD = "dsm-e2e-operator", "Pw-9f3kZq-never-in-clear"
WRONG_PASSWORD = "Wrong-7hXq-password"


@dataclass
class Servers:
    served: Path  # what the servers hand out
    http: FileServer
    https: FileServer  # trusted through [packager.tar] ca_file, Basic auth USER/PASSWORD
    untrusted: FileServer  # https with a certificate from a CA the daemon does not know


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lcm-e2e")


@pytest.fixture(scope="module")
def tls(work: Path) -> TlsFiles:
    try:
        return make_tls_files(work / "tls")
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")


@pytest.fixture(scope="module")
def servers(work: Path, tls: TlsFiles) -> Iterator[Servers]:
    served = work / "served"
    served.mkdir()
    other_ca = make_tls_files(work / "other-tls")
    with (
        FileServer(served) as http,
        FileServer(served, tls=tls) as https,
        FileServer(served, tls=other_ca) as untrusted,
    ):
        https.auth = (USER, PASSWORD)
        yield Servers(served, http, https, untrusted)


@pytest.fixture(scope="module")
def daemon(work: Path, tls: TlsFiles) -> Iterator[DsmDaemon]:
    (work / "dsm").mkdir()
    dsm = DsmDaemon(work / "dsm", extra={"packager.tar": {"ca_file": str(tls.ca_cert)}})
    try:
        yield dsm.start()
    finally:
        dsm.cleanup()


@pytest.fixture
def dsm(daemon: DsmDaemon) -> Iterator[DsmDaemon]:
    """The module's daemon, running; afterwards back to no DU (whatever the test did)."""
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    yield daemon
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")
    set_values(daemon, {EE1 + ".Enable": True, EE1 + ".InitialRunLevel": 0})


@pytest.fixture
def archives(work: Path, request: pytest.FixtureRequest) -> Path:
    path = work / "archives" / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir(parents=True)
    return path


def installed(outcome: Outcome) -> str:
    """The DU row of a successful install."""
    assert outcome.ok, outcome
    assert outcome.event is not None
    assert outcome.event["CurrentState"] == "Installed", outcome.event
    return str(outcome.event["DeploymentUnitRef"]) + "."


def start(dsm: DsmDaemon, eu: str) -> dict[str, str]:
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    return wait_status(dsm, eu, "Active")


def instance(path: str) -> str:
    return path.rstrip(".").rpartition(".")[2]


def bundle_dirs(dsm: DsmDaemon, du: str) -> list[str]:
    """The generations under state/bundles/<du instance>/."""
    return top_entries(dsm.state / "bundles" / instance(du))


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# == installs ==========================================================================


@dataclass(frozen=True)
class Source:
    kind: str  # https (Basic auth) / http / file-url / path
    suffix: str
    flat: bool


SOURCES = [
    Source("https", ".tar.gz", flat=False),
    Source("http", ".tar.xz", flat=True),
    Source("file-url", ".tar", flat=True),
    Source("path", ".tar", flat=False),
]


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: f"{s.kind}{s.suffix}{'-flat' if s.flat else ''}")
def test_install_creates_du_and_eu_rows_event_and_one_bundle_dir(
    dsm: DsmDaemon, servers: Servers, archives: Path, source: Source
) -> None:
    name = f"inst-{source.kind}"
    archive = build_du(archives, name, "1.2.3", suffix=source.suffix, flat=source.flat, description="e2e d")
    credentials: dict[str, str] = {}
    if source.kind in ("https", "http"):
        served = shutil.copy(archive, servers.served / archive.name)
        server = servers.https if source.kind == "https" else servers.http
        url = server.url(Path(served).name)
        if source.kind == "https":
            credentials = {"Username": USER, "Password": PASSWORD}
    else:
        url = archive.as_uri() if source.kind == "file-url" else str(archive)
    before = datetime.now(UTC).replace(microsecond=0)

    outcome = install(dsm, url, **credentials)

    after = datetime.now(UTC)
    du = installed(outcome)
    eu = eu_of(dsm, du)
    expected_uuid = annex_c_uuid(name, "acme")
    assert outcome.result is not None
    assert (outcome.result["UUID"], outcome.result["Version"], outcome.result["ExecEnvRef"]) == (
        expected_uuid,
        "1.2.3",
        EE1,
    )
    event = outcome.event
    assert event is not None
    assert {k: event[k] for k in ("UUID", "DeploymentUnitRef", "Version", "CurrentState", "Resolved")} == {
        "UUID": expected_uuid,
        "DeploymentUnitRef": du.rstrip("."),
        "Version": "1.2.3",
        "CurrentState": "Installed",
        "Resolved": "true",
    }
    assert (event["OperationPerformed"], event["Fault.FaultCode"], event["Fault.FaultString"]) == ("Install", "0", "")
    assert event["ExecutionUnitRefList"] == eu.rstrip(".")
    assert before <= stamp(event["StartTime"]) <= stamp(event["CompleteTime"]) <= after

    du_values = row(dsm, du)
    assert {k: du_values[k] for k in ("UUID", "Name", "Vendor", "Version", "Description", "Status", "URL")} == {
        "UUID": expected_uuid,
        "Name": name,
        "Vendor": "acme",
        "Version": "1.2.3",
        "Description": "e2e d",
        "Status": "Installed",
        "URL": url,
    }
    assert du_values["Resolved"] == "true"
    assert du_values["ExecutionUnitList"] == eu.rstrip(".")
    assert du_values["ExecutionEnvRef"] == EE1
    assert before <= stamp(du_values["Installed"]) <= after
    assert du_values["LastUpdate"] == du_values["Installed"]
    eu_values = row(dsm, eu)
    assert {k: eu_values[k] for k in ("Name", "Vendor", "Version", "Description", "Status", "ExecutionEnvRef")} == {
        "Name": name,
        "Vendor": "acme",
        "Version": "1.2.3",
        "Description": "e2e d",
        "Status": "Idle",
        "ExecutionEnvRef": EE1,
    }
    assert eu_values["ExecutionFaultCode"] == "NoFault"
    assert eu_values["ExecEnvLabel"] == eu_values["EUID"]
    assert int(eu_values["DiskSpaceInUse"]) > 1000  # the busybox binary alone is ~2 MB
    # VendorLogList: the EU's log row, the same on the DU, naming the EU's log file.
    (log_row,) = eu_values["VendorLogList"].split(",")
    assert du_values["VendorLogList"] == log_row
    assert Path(value(dsm, log_row + ".Name")).name == f"{eu_values['EUID']}.log"
    counts = dsm.get(SM + "DeploymentUnitNumberOfEntries", SM + "ExecutionUnitNumberOfEntries")
    assert counts == {SM + "DeploymentUnitNumberOfEntries": "1", SM + "ExecutionUnitNumberOfEntries": "1"}

    # On disk: state/bundles/<n>/<one generation>/{config.json, rootfs/}, nothing else.
    bundles = dsm.state / "bundles"
    assert top_entries(bundles) == [instance(du)]
    (generation,) = bundle_dirs(dsm, du)
    assert not generation.startswith(".staging")
    # The bundle as unpacked, and beside it the EU's persisted effective spec.
    assert top_entries(bundles / instance(du) / generation) == [".dsm-spec", "config.json", "rootfs"]
    assert (bundles / instance(du) / generation / "rootfs" / "bin" / "busybox").is_file()
    if source.kind == "https":
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert any(r.authorization == expected and r.path.endswith(archive.name) for r in servers.https.requests)


def test_install_keeps_the_uuid_given_and_defaults_to_the_first_execenv(dsm: DsmDaemon, archives: Path) -> None:
    given = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
    outcome = install(dsm, str(build_du(archives, "given-uuid")), UUID=given, ExecutionEnvRef="")
    du = installed(outcome)
    assert value(dsm, du + "UUID") == given
    assert outcome.event is not None and outcome.event["UUID"] == given
    assert annex_c_uuid("given-uuid", "acme") != given
    assert value(dsm, du + "ExecutionEnvRef") == EE1


def test_installing_the_same_du_and_version_again_fails_and_keeps_the_first(dsm: DsmDaemon, archives: Path) -> None:
    archive = str(build_du(archives, "twice"))
    du = installed(install(dsm, archive))
    (generation,) = bundle_dirs(dsm, du)

    outcome = install(dsm, archive)

    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DUPLICATE_DU.usp, outcome
    assert outcome.event is not None
    assert (outcome.event["CurrentState"], outcome.event["Fault.FaultCode"]) == ("Failed", "7226")
    assert outcome.event["DeploymentUnitRef"] != du.rstrip(".")
    assert rows(dsm, DU) == [du]
    assert value(dsm, du + "Status") == "Installed"
    assert top_entries(dsm.state / "bundles") == [instance(du)]
    assert bundle_dirs(dsm, du) == [generation]


# == running an EU =======================================================================


def test_eu_runs_as_a_container_logs_and_reports_usage_then_stops(dsm: DsmDaemon, archives: Path) -> None:
    du = installed(install(dsm, str(build_du(archives, "runner"))))
    eu = eu_of(dsm, du)
    euid = value(dsm, eu + "EUID")

    active = start(dsm, eu)

    assert active["ExecutionFaultCode"] == "NoFault"
    state = runc_state(dsm, euid)
    assert state is not None and state["status"] == "running"
    assert dsm.containers() == [euid]
    assert value(dsm, EE1 + ".ActiveExecutionUnits") == eu.rstrip(".")
    log_file = dsm.state / "logs" / f"{euid}.log"
    eventually(lambda: log_file.exists() and "hello from runner 1.0.0" in log_file.read_text(), what="EU output")
    memory = eventually(lambda: int(value(dsm, eu + "MemoryInUse")) > 0 and value(dsm, eu + "MemoryInUse"))
    assert int(memory) > 0
    first = int(value(dsm, eu + "Uptime"))
    eventually(lambda: int(value(dsm, eu + "Uptime")) > first, timeout=5, what="Uptime to grow")

    events = dsm.events(eu + "Status")
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    events.wait_for(lambda e: e.get("value") == "Stopping")
    events.wait_for(lambda e: e.get("value") == "Idle")

    idle = row(dsm, eu)
    assert (idle["Status"], idle["ExecutionFaultCode"], idle["MemoryInUse"]) == ("Idle", "NoFault", "-1")
    assert idle["Uptime"] == "0"
    assert dsm.containers() == []
    assert value(dsm, EE1 + ".ActiveExecutionUnits") == ""


def test_container_exiting_with_code_3_leaves_the_eu_idle_with_failure_while_active(
    dsm: DsmDaemon, archives: Path
) -> None:
    args = ("/bin/sh", "-c", "echo about to fail; sleep 1; exit 3")
    eu = eu_of(dsm, installed(install(dsm, str(build_du(archives, "quitter", args=args)))))
    statuses = dsm.events(eu + "Status")
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    statuses.wait_for(lambda e: e.get("value") == "Active")  # it did start

    statuses.wait_for(lambda e: e.get("value") == "Idle")

    idle = row(dsm, eu)
    assert idle["ExecutionFaultCode"] == "FailureWhileActive"
    assert idle["ExecutionFaultMessage"] == "container exited with status 3"
    assert "about to fail" in (dsm.state / "logs" / f"{idle['EUID']}.log").read_text()
    assert [c for c in dsm.containers() if (runc_state(dsm, c) or {}).get("status") == "running"] == []


def test_container_that_cannot_start_is_failure_on_start(dsm: DsmDaemon, archives: Path) -> None:
    args = ("/bin/no-such-program", "--flag")
    eu = eu_of(dsm, installed(install(dsm, str(build_du(archives, "unstartable", args=args)))))

    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    idle = eventually(
        lambda: (r := row(dsm, eu))["ExecutionFaultCode"] != "NoFault" and r["Status"] == "Idle" and r,
        what="the failed start",
    )

    assert idle["ExecutionFaultCode"] == "FailureOnStart"
    assert "no-such-program" in idle["ExecutionFaultMessage"]
    assert dsm.containers() == []


def test_restart_replaces_the_running_container(dsm: DsmDaemon, archives: Path) -> None:
    eu = eu_of(dsm, installed(install(dsm, str(build_du(archives, "restarter")))))
    euid = start(dsm, eu)["EUID"]
    first = runc_state(dsm, euid)
    assert first is not None
    events = dsm.events(eu + "Status")

    assert operate(dsm, eu + "Restart()").ok

    events.wait_for(lambda e: e.get("value") == "Restarting")
    events.wait_for(lambda e: e.get("value") == "Active")
    second = runc_state(dsm, euid)
    assert second is not None and second["status"] == "running"
    assert second["pid"] != first["pid"]
    assert value(dsm, eu + "ExecutionFaultCode") == "NoFault"


def test_autostart_eu_starts_with_the_daemon_and_follows_the_run_level(dsm: DsmDaemon, archives: Path) -> None:
    eu = eu_of(dsm, installed(install(dsm, str(build_du(archives, "autostarter")))))
    set_values(dsm, {eu + "AutoStart": True, eu + "RunLevel": 3, EE1 + ".InitialRunLevel": 5})
    assert value(dsm, eu + "Status") == "Idle"

    dsm.stop()
    dsm.start()

    assert value(dsm, EE1 + ".CurrentRunLevel") == "5"
    euid = wait_status(dsm, eu, "Active")["EUID"]
    assert dsm.containers() == [euid]
    assert operate(dsm, EE1 + ".SetRunLevel()", {"RequestedRunLevel": 2}).ok
    wait_status(dsm, eu, "Idle")
    assert dsm.containers() == []
    assert value(dsm, EE1 + ".CurrentRunLevel") == "2"
    assert operate(dsm, EE1 + ".SetRunLevel()", {"RequestedRunLevel": 3}).ok
    wait_status(dsm, eu, "Active")


def test_disabling_the_execenv_stops_its_eus_and_refuses_to_start_them(dsm: DsmDaemon, archives: Path) -> None:
    eu = eu_of(dsm, installed(install(dsm, str(build_du(archives, "disabled")))))
    start(dsm, eu)

    set_values(dsm, {EE1 + ".Enable": False})

    idle = eventually(
        lambda: (r := row(dsm, eu))["Status"] == "Idle" and r["ExecutionFaultCode"] == "UnStartable" and r,
        what="the EU stopped as UnStartable",
    )
    assert "disabled" in idle["ExecutionFaultMessage"]
    assert value(dsm, EE1 + ".Status") == "Disabled"
    assert dsm.containers() == []
    refused = operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"})
    assert refused.fault is not None and refused.fault["code"] == 7012, refused
    assert value(dsm, eu + "Status") == "Idle"
    assert dsm.containers() == []


# == Update ================================================================================


def test_update_of_a_running_du_swaps_the_bundle_and_restarts_the_eu(dsm: DsmDaemon, archives: Path) -> None:
    du = installed(install(dsm, str(build_du(archives, "updater", "1.0.0"))))
    eu = eu_of(dsm, du)
    euid = start(dsm, eu)["EUID"]
    old_pid = runc_state(dsm, euid)["pid"]  # type: ignore[index]
    (old_generation,) = bundle_dirs(dsm, du)
    installed_at = value(dsm, du + "Installed")
    new_url = str(build_du(archives, "updater", "2.0.0", suffix=".tar.gz"))
    statuses = dsm.events(eu + "Status")

    outcome = operate(dsm, du + "Update()", {"URL": new_url})

    assert outcome.ok, outcome
    for expected in ("Stopping", "Idle", "Starting", "Active"):  # stopped, then started on the new bundle
        statuses.wait_for(lambda e, expected=expected: e.get("value") == expected)
    assert outcome.event is not None
    assert (outcome.event["OperationPerformed"], outcome.event["CurrentState"]) == ("Update", "Installed")
    assert (outcome.event["Version"], outcome.event["Fault.FaultCode"]) == ("2.0.0", "0")
    du_values = row(dsm, du)
    assert (du_values["Version"], du_values["URL"], du_values["Status"]) == ("2.0.0", new_url, "Installed")
    assert du_values["Installed"] == installed_at
    assert stamp(du_values["LastUpdate"]) >= stamp(installed_at)
    assert wait_status(dsm, eu, "Active")["Version"] == "2.0.0"
    new_state = runc_state(dsm, euid)
    assert new_state is not None and new_state["pid"] != old_pid
    (new_generation,) = bundle_dirs(dsm, du)
    assert new_generation != old_generation
    assert running_rootfs(new_state) == str(dsm.state / "bundles" / instance(du) / new_generation / "rootfs")
    log_file = dsm.state / "logs" / f"{euid}.log"
    eventually(lambda: "hello from updater 2.0.0" in log_file.read_text(), what="the new version's output")


@pytest.mark.parametrize(
    ("version", "code"),
    [("1.5.0", FaultCode.DUPLICATE_DU), ("1.4.9", FaultCode.DOWNGRADE_NOT_PERMITTED)],
    ids=["same-version", "downgrade"],
)
def test_update_to_the_same_or_an_older_version_fails_and_keeps_the_du(
    dsm: DsmDaemon, archives: Path, version: str, code: FaultCode
) -> None:
    du = installed(install(dsm, str(build_du(archives, "keeper", "1.5.0"))))
    eu = eu_of(dsm, du)
    euid = start(dsm, eu)["EUID"]
    pid = runc_state(dsm, euid)["pid"]  # type: ignore[index]
    (generation,) = bundle_dirs(dsm, du)
    url = value(dsm, du + "URL")

    outcome = operate(dsm, du + "Update()", {"URL": str(build_du(archives, "keeper", version, suffix=".tar.gz"))})

    assert outcome.fault is not None, outcome
    assert (outcome.fault["code"], outcome.fault["cwmp_code"]) == (code.usp, code.cwmp)
    assert outcome.event is not None
    assert (outcome.event["OperationPerformed"], outcome.event["CurrentState"]) == ("Update", "Installed")
    assert (outcome.event["Fault.FaultCode"], outcome.event["Version"]) == (str(code.usp), "1.5.0")
    du_values = row(dsm, du)
    assert (du_values["Status"], du_values["Version"], du_values["URL"]) == ("Installed", "1.5.0", url)
    assert bundle_dirs(dsm, du) == [generation]
    assert row(dsm, eu)["Status"] == "Active"
    assert runc_state(dsm, euid)["pid"] == pid  # type: ignore[index]  # refused before anything stopped


def secrets_in(data: bytes) -> list[str]:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [s for s in (PASSWORD, WRONG_PASSWORD, basic, f"{USER}\0{PASSWORD}") if s.encode() in data]


def assert_no_clear_credentials(dsm: DsmDaemon) -> None:
    """Neither the password nor the Basic credentials in the store, its WAL, the log or any get."""
    for name in ("dsm.db", "dsm.db-wal"):
        path = dsm.state / name
        if path.exists():
            assert secrets_in(path.read_bytes()) == [], f"credentials in clear in {name}"
    assert secrets_in(dsm.log_path.read_bytes()) == [], "credentials in the daemon log"
    everything = "\n".join(f"{k}={v}" for k, v in dsm.get("Device.").items())
    assert secrets_in(everything.encode()) == []


def test_update_without_url_reuses_the_stored_url_and_credentials(
    dsm: DsmDaemon, servers: Servers, archives: Path
) -> None:
    served = servers.served / "sealed.tar"
    build_du(archives, "sealed", "1.0.0", out=served)
    url = servers.https.url("sealed.tar")
    du = installed(install(dsm, url, Username=USER, Password=PASSWORD))
    build_du(archives, "sealed", "1.1.0", out=served)  # the server now has a newer build at the same URL
    asked = len(servers.https.requests)

    outcome = operate(dsm, du + "Update()")

    assert outcome.ok, outcome
    assert (value(dsm, du + "Version"), value(dsm, du + "URL")) == ("1.1.0", url)
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    fetched = [r for r in servers.https.requests[asked:] if r.path == "/sealed.tar"]
    assert fetched and all(r.authorization == basic for r in fetched)
    assert value(dsm, du + "Status") == "Installed"
    assert_no_clear_credentials(dsm)
    # The sealed credentials survive a restart (they are read back from the store).
    dsm.stop()
    dsm.start()
    build_du(archives, "sealed", "1.2.0", out=served)
    assert operate(dsm, du + "Update()").ok
    assert value(dsm, du + "Version") == "1.2.0"
    assert_no_clear_credentials(dsm)


def test_update_with_undecryptable_stored_credentials_is_refused_clearly(
    dsm: DsmDaemon, servers: Servers, archives: Path
) -> None:
    served = servers.served / "rekeyed.tar"
    build_du(archives, "rekeyed", "1.0.0", out=served)
    du = installed(install(dsm, servers.https.url("rekeyed.tar"), Username=USER, Password=PASSWORD))
    dsm.stop()
    (dsm.state / "secret.key").write_bytes(base64.urlsafe_b64encode(os.urandom(32)))  # a new device key
    dsm.start()
    build_du(archives, "rekeyed", "1.1.0", out=served)

    refused = operate(dsm, du + "Update()")

    assert refused.fault is not None, refused
    assert refused.fault["code"] == FaultCode.REQUEST_DENIED.usp
    assert "credentials" in refused.fault["message"] and "Username" in refused.fault["message"]
    assert refused.event is None
    assert (value(dsm, du + "Status"), value(dsm, du + "Version")) == ("Installed", "1.0.0")
    assert operate(dsm, du + "Update()", {"Username": USER, "Password": PASSWORD}).ok
    assert value(dsm, du + "Version") == "1.1.0"


# == Uninstall ===============================================================================


def test_uninstall_stops_the_eu_and_removes_rows_and_files(dsm: DsmDaemon, archives: Path) -> None:
    du = installed(install(dsm, str(build_du(archives, "leaver"))))
    eu = eu_of(dsm, du)
    start(dsm, eu)
    uuid = value(dsm, du + "UUID")

    outcome = operate(dsm, du + "Uninstall()")

    assert outcome.ok, outcome
    assert outcome.event is not None
    assert {k: outcome.event[k] for k in ("UUID", "OperationPerformed", "CurrentState", "Fault.FaultCode")} == {
        "UUID": uuid,
        "OperationPerformed": "Uninstall",
        "CurrentState": "Uninstalled",
        "Fault.FaultCode": "0",
    }
    assert rows(dsm, DU) == [] and rows(dsm, EU) == []
    assert rows(dsm, "Device.DeviceInfo.VendorLogFile.") == []
    assert dsm.containers() == []
    assert tree_files(dsm.state / "bundles") == []
    assert tree_files(dsm.state / "logs") == []


def test_active_execution_units_lists_the_active_eus_in_instance_order(dsm: DsmDaemon, archives: Path) -> None:
    """ExecEnv.ActiveExecutionUnits follows each EU's Status: started in reverse order it
    still lists them by instance; a stopped or uninstalled EU leaves the list."""
    dus = [installed(install(dsm, str(build_du(archives, name)))) for name in ("first", "second", "third")]
    eus = [eu_of(dsm, du) for du in dus]
    for eu in reversed(eus):
        start(dsm, eu)
    assert value(dsm, EE1 + ".ActiveExecutionUnits") == ",".join(eu.rstrip(".") for eu in eus)

    assert operate(dsm, eus[1] + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    wait_status(dsm, eus[1], "Idle")
    assert value(dsm, EE1 + ".ActiveExecutionUnits") == f"{eus[0].rstrip('.')},{eus[2].rstrip('.')}"

    assert operate(dsm, dus[0] + "Uninstall()").ok
    assert value(dsm, EE1 + ".ActiveExecutionUnits") == eus[2].rstrip(".")


# == failed installs ==========================================================================


def assert_nothing_installed(dsm: DsmDaemon) -> None:
    assert rows(dsm, DU) == [] and rows(dsm, EU) == []
    assert value(dsm, SM + "DeploymentUnitNumberOfEntries") == "0"
    assert tree_files(dsm.state / "bundles") == []
    assert dsm.containers() == []


def test_install_into_an_unknown_execenv_is_refused_at_once(dsm: DsmDaemon, archives: Path) -> None:
    outcome = install(dsm, str(build_du(archives, "nowhere")), ExecutionEnvRef=SM + "ExecEnv.9")

    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.UNKNOWN_EE.usp, outcome
    assert outcome.event is None
    assert_nothing_installed(dsm)


def test_install_into_a_disabled_execenv_fails_with_its_event(dsm: DsmDaemon, archives: Path) -> None:
    """The ExecEnv's state, not the request, refuses it: an outcome (README "Outcomes")."""
    set_values(dsm, {EE1 + ".Enable": False})

    outcome = install(dsm, str(build_du(archives, "disabled-ee")))

    assert outcome.fault is not None, outcome
    assert (outcome.fault["code"], outcome.fault["cwmp_code"]) == (7012, FaultCode.DISABLED_EE.cwmp)
    assert outcome.event is not None
    assert (outcome.event["CurrentState"], outcome.event["Fault.FaultCode"]) == ("Failed", "7012")
    assert_nothing_installed(dsm)


def test_install_from_a_url_with_userinfo_is_refused_at_once(dsm: DsmDaemon, servers: Servers) -> None:
    url = servers.https.url("x.tar").replace("https://", f"https://{USER}:{PASSWORD}@")

    outcome = install(dsm, url)

    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.INVALID_ARGUMENTS.usp, outcome
    assert outcome.event is None
    assert_nothing_installed(dsm)
    assert secrets_in(dsm.log_path.read_bytes()) == []


Member = tuple[tarfile.TarInfo, bytes]


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, len(data), 0o755 if kind == tarfile.DIRTYPE else 0o644, 0
    for key, attr in attrs.items():
        setattr(info, key, attr)
    return info, data


def evil_archive(path: Path, extra: list[Member]) -> Path:
    """A small valid bundle (as tests/unit/test_packager_extract.py builds them) plus ``extra``."""
    config = oci_config(["/bin/sh", "-c", "true"], annotations={"org.opencontainers.image.version": "1.0"})
    members = [
        member("app/", kind=tarfile.DIRTYPE),
        member("app/config.json", json_bytes(config)),
        member("app/rootfs/", kind=tarfile.DIRTYPE),
        member("app/rootfs/bin/", kind=tarfile.DIRTYPE),
        member("app/rootfs/bin/busybox", b"\x7fELF" + bytes(2000), mode=0o755),
        member("app/rootfs/bin/sh", kind=tarfile.SYMTYPE, linkname="busybox"),
        *extra,
    ]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def json_bytes(data: object) -> bytes:
    return json.dumps(data).encode()


@dataclass(frozen=True)
class BadSource:
    name: str
    code: FaultCode


BAD_SOURCES = [
    BadSource("http-404", FaultCode.FILE_ACCESS_FAILURE),
    BadSource("wrong-password", FaultCode.TRANSFER_AUTH_FAILURE),
    BadSource("https-without-its-ca", FaultCode.SERVER_INSECURE),
    BadSource("corrupt-archive", FaultCode.CORRUPT_DATA),
    BadSource("traversal", FaultCode.CORRUPT_DATA),
    BadSource("symlink-escape", FaultCode.CORRUPT_DATA),
    BadSource("device-node", FaultCode.CORRUPT_DATA),
]


@pytest.mark.parametrize("bad", BAD_SOURCES, ids=lambda b: b.name)
def test_failed_install_reports_the_fault_and_leaves_nothing(
    dsm: DsmDaemon, servers: Servers, archives: Path, bad: BadSource
) -> None:
    credentials: dict[str, str] = {}
    if bad.name == "http-404":
        url = servers.http.url("no-such-du.tar")
    elif bad.name == "wrong-password":
        build_du(archives, "locked", out=servers.served / "locked.tar")
        url, credentials = servers.https.url("locked.tar"), {"Username": USER, "Password": WRONG_PASSWORD}
    elif bad.name == "https-without-its-ca":
        build_du(archives, "untrusted", out=servers.served / "untrusted.tar")
        url = servers.untrusted.url("untrusted.tar")
    elif bad.name == "corrupt-archive":
        good = build_du(archives, "corrupt", suffix=".tar.gz").read_bytes()
        (archives / "corrupt.tar.gz").write_bytes(good[: len(good) // 2])
        url = str(archives / "corrupt.tar.gz")
    else:
        escaped = archives / "escaped"
        extra = {
            "traversal": [member("app/../../escaped", b"x")],
            "symlink-escape": [
                member("app/rootfs/out", kind=tarfile.SYMTYPE, linkname="../../../.."),
                member("app/rootfs/out/escaped", b"x"),
            ],
            "device-node": [member("app/rootfs/mem", kind=tarfile.CHRTYPE, devmajor=1, devminor=1)],
        }[bad.name]
        url = evil_archive(archives / "evil.tar", extra).as_uri()
        assert not escaped.exists()

    outcome = install(dsm, url, **credentials)

    assert outcome.fault is not None, outcome
    assert (outcome.fault["code"], outcome.fault["cwmp_code"]) == (bad.code.usp, bad.code.cwmp), outcome.fault
    event = outcome.event
    assert event is not None, "no DUStateChange! for a failure after the request was accepted"
    assert (event["OperationPerformed"], event["CurrentState"], event["Resolved"]) == ("Install", "Failed", "false")
    assert event["Fault.FaultCode"] == str(bad.code.usp)
    assert event["Fault.FaultString"]
    assert event["ExecutionUnitRefList"] == ""
    assert_nothing_installed(dsm)
    assert not (archives / "escaped").exists() and not (dsm.state / "escaped").exists()
    assert [p for p in dsm.state.rglob("*") if p.name.startswith(".staging")] == []
    assert secrets_in(dsm.log_path.read_bytes()) == []


# == start-up refusals =======================================================================


@pytest.mark.parametrize("problem", ["packager-section", "device-key"])
def test_daemon_refuses_to_start_with_a_clear_message(tmp_path: Path, problem: str) -> None:
    extra = {"packager.tar": {"max_entrys": 5}} if problem == "packager-section" else {}
    dsm = DsmDaemon(tmp_path, extra=extra)
    if problem == "device-key":
        dsm.state.mkdir()
        (dsm.state / "secret.key").write_text("garbage\n")
    try:
        with pytest.raises(RuntimeError, match="exited with 2"):
            dsm.start()
    finally:
        dsm.cleanup()
    log = dsm.log()
    assert "Traceback" not in log
    assert ("max_entrys" if problem == "packager-section" else "does not hold a device key") in log
