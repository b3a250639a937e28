"""The lifecycle as TR-181 2.19.1 words it (dsm_tr181/lcm/states.py quotes the texts), end to end:
the real ``dsm`` daemon, real runc containers, DU archives built here, a real HTTP server.

One daemon (ExecEnv 1 "default" enabled, ExecEnv 2 "spare" configured disabled) serves the
module; every test leaves it with no DU, ExecEnv 1 enabled and ExecEnv 2 back to disabled.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from dsm_tr181.lcm.identity import annex_c_uuid
from tests.integration.lcm_helpers import (
    DU,
    EE,
    EE1,
    INSTALL_DU,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    operate_async,
    row,
    rows,
    runc_state,
    set_values,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.integration, needs_runc]

EE2 = EE + "2"
NO_TIME = "9999-12-31T23:59:59Z"  # TR-106 Infinite Time: "no restart is currently scheduled"
STUBBORN = ("/bin/sh", "-c", "trap '' TERM; echo stubborn; sleep 3600 & wait; sleep 3600")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def daemon(work: Path) -> Iterator[DsmDaemon]:
    (work / "dsm").mkdir()
    dsm = DsmDaemon(work / "dsm", execenvs=[{"name": "default"}, {"name": "spare", "enable": False}])
    try:
        yield dsm.start()
    finally:
        dsm.cleanup()


@pytest.fixture(scope="module")
def http(work: Path) -> Iterator[FileServer]:
    served = work / "served"
    served.mkdir()
    with FileServer(served) as server:
        yield server


@pytest.fixture
def dsm(daemon: DsmDaemon, http: FileServer) -> Iterator[DsmDaemon]:
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    yield daemon
    http.chunk_delay = 0.0
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    set_values(daemon, {EE1 + ".Enable": True, EE1 + ".InitialRunLevel": 0})
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")
    set_values(daemon, {EE2 + ".Enable": False})


@pytest.fixture
def archives(work: Path, request: pytest.FixtureRequest) -> Path:
    path = work / "archives" / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir(parents=True)
    return path


def installed(dsm: DsmDaemon, url: str, **args: object) -> tuple[str, str]:
    """Install; the DU and EU rows (with trailing dots)."""
    outcome = install(dsm, url, **args)
    assert outcome.ok and outcome.event is not None, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    return du, eu_of(dsm, du)


def request_state(dsm: DsmDaemon, eu: str, state: str) -> dict[str, object] | None:
    """SetRequestedState(); the fault, None when accepted."""
    return operate(dsm, eu + "SetRequestedState()", {"RequestedState": state}).fault


def start(dsm: DsmDaemon, eu: str) -> dict[str, str]:
    assert request_state(dsm, eu, "Active") is None
    return wait_status(dsm, eu, "Active")


# == A6: refusals the EU and ExecEnv texts require ===========================================


def test_set_requested_state_active_while_stopping_is_refused_and_the_eu_stays_down(
    dsm: DsmDaemon, archives: Path
) -> None:
    _, eu = installed(dsm, str(build_du(archives, "stubborn", args=STUBBORN)), ShutdownDelay=3)
    euid = start(dsm, eu)["EUID"]
    assert request_state(dsm, eu, "Idle") is None
    wait_status(dsm, eu, "Stopping")

    fault = request_state(dsm, eu, "Active")

    assert fault is not None and fault["code"] == FaultCode.INVALID_EE_STATE.usp, fault
    wait_status(dsm, eu, "Idle")
    time.sleep(1.0)  # a wrongly accepted request would restart it right after the stop
    assert value(dsm, eu + "Status") == "Idle"
    assert runc_state(dsm, euid) is None


def test_set_requested_state_idle_on_a_disabled_execenv_is_refused(dsm: DsmDaemon, archives: Path) -> None:
    _, eu = installed(dsm, str(build_du(archives, "idler")))
    set_values(dsm, {EE1 + ".Enable": False})

    fault = request_state(dsm, eu, "Idle")

    assert fault is not None and fault["code"] == FaultCode.INVALID_VALUE.usp, fault
    assert "disabled" in str(fault["message"])


def test_install_still_downloading_when_its_execenv_is_disabled_fails(
    dsm: DsmDaemon, http: FileServer, archives: Path
) -> None:
    build_du(archives, "slowpoke", out=Path(http.root) / "slowpoke.tar")
    http.chunk_delay = 0.1
    operate_async(dsm, INSTALL_DU, {"URL": http.url("slowpoke.tar"), "ExecutionEnvRef": EE1})
    events = dsm.events("Device.SoftwareModules.DUStateChange!")
    set_values(dsm, {EE1 + ".Enable": False})

    event = events.du_state_change("Install")

    assert (event["CurrentState"], event["Fault.FaultCode"]) == ("Failed", str(FaultCode.DISABLED_EE.usp)), event
    assert rows(dsm, DU) == []


# == A7: AutoRestart ============================================================================


def auto_restart(dsm: DsmDaemon, eu: str) -> dict[str, str]:
    return row(dsm, eu + "AutoRestart.")


def test_next_restart_reads_infinite_time_unless_a_restart_is_scheduled(dsm: DsmDaemon, archives: Path) -> None:
    args = ("/bin/sh", "-c", "sleep 2; exit 3")
    _, eu = installed(dsm, str(build_du(archives, "crasher", args=args)))
    assert auto_restart(dsm, eu)["NextRestart"] == NO_TIME
    set_values(dsm, {eu + "AutoRestart.Enable": True, eu + "AutoRestart.RetryMinimumWaitInterval": 60})
    start(dsm, eu)

    scheduled = eventually(lambda: (a := auto_restart(dsm, eu))["NextRestart"] != NO_TIME and a, what="a retry")
    assert scheduled["RetryCount"] == "1"
    assert request_state(dsm, eu, "Idle") is None  # the controller cancels the pending retry

    assert auto_restart(dsm, eu)["NextRestart"] == NO_TIME


def test_restart_command_resets_retry_count(dsm: DsmDaemon, archives: Path) -> None:
    args = ("/bin/sh", "-c", "sleep 3; exit 3")
    _, eu = installed(dsm, str(build_du(archives, "retrier", args=args)))
    set_values(dsm, {eu + "AutoRestart.Enable": True, eu + "AutoRestart.RetryMinimumWaitInterval": 60})
    start(dsm, eu)
    eventually(lambda: auto_restart(dsm, eu)["RetryCount"] == "1", what="the first retry")

    assert operate(dsm, eu + "Restart()").ok

    assert auto_restart(dsm, eu)["RetryCount"] == "0"  # "Invoking the Restart() command also ... zero"


def test_an_eu_exiting_with_status_0_is_not_a_failure_and_is_not_restarted(dsm: DsmDaemon, archives: Path) -> None:
    args = ("/bin/sh", "-c", "sleep 1; exit 0")
    _, eu = installed(dsm, str(build_du(archives, "oneshot", args=args)))
    set_values(dsm, {eu + "AutoRestart.Enable": True, eu + "AutoRestart.RetryMinimumWaitInterval": 1})
    start(dsm, eu)

    idle = wait_status(dsm, eu, "Idle")
    time.sleep(2.5)  # longer than the retry interval

    assert value(dsm, eu + "Status") == "Idle"
    assert idle["ExecutionFaultCode"] == "NoFault"
    assert (auto_restart(dsm, eu)["RetryCount"], auto_restart(dsm, eu)["NextRestart"]) == ("0", NO_TIME)
    assert [c for c in dsm.containers() if (runc_state(dsm, c) or {}).get("status") == "running"] == []


def test_disable_resets_restart_count_and_enable_clears_unstartable(dsm: DsmDaemon, archives: Path) -> None:
    _, eu = installed(dsm, str(build_du(archives, "bystander")))
    start(dsm, eu)
    assert operate(dsm, EE1 + ".Restart()", {"Reason": "test"}).ok
    assert value(dsm, EE1 + ".RestartCount") == "1"
    set_values(dsm, {EE1 + ".Enable": False})
    eventually(lambda: value(dsm, eu + "ExecutionFaultCode") == "UnStartable", what="UnStartable")

    assert value(dsm, EE1 + ".RestartCount") == "0"  # "restarted since it was last disabled"
    set_values(dsm, {EE1 + ".Enable": True})
    assert value(dsm, eu + "ExecutionFaultCode") == "NoFault"


# == A8: Reset() of an ExecEnv configured disabled ==============================================


def test_reset_of_an_execenv_configured_disabled_leaves_it_disabled(dsm: DsmDaemon) -> None:
    set_values(dsm, {EE2 + ".Enable": True})
    assert value(dsm, EE2 + ".Status") == "Up"

    assert operate(dsm, EE2 + ".Reset()").ok

    assert (value(dsm, EE2 + ".Enable"), value(dsm, EE2 + ".Status")) == ("false", "Disabled")


# == A4 / A5: the DUStateChange! of Uninstall and of a failed Install ==========================


def test_uninstall_event_lists_the_removed_eus_and_is_resolved(dsm: DsmDaemon, archives: Path) -> None:
    du, eu = installed(dsm, str(build_du(archives, "leaver")))

    outcome = operate(dsm, du + "Uninstall()")

    assert outcome.ok and outcome.event is not None, outcome
    assert outcome.event["CurrentState"] == "Uninstalled"
    assert outcome.event["ExecutionUnitRefList"] == eu.rstrip(".")
    assert outcome.event["Resolved"] == "true"


def test_failed_install_names_no_du_and_no_row_appears_meanwhile(
    dsm: DsmDaemon, http: FileServer, archives: Path
) -> None:
    build_du(archives, "slowfail", out=Path(http.root) / "slowfail.tar")
    http.chunk_delay = 0.1
    operate_async(dsm, INSTALL_DU, {"URL": http.url("slowfail.tar"), "ExecutionEnvRef": EE1})
    time.sleep(0.5)  # downloading
    assert rows(dsm, DU) == []  # no row under a temporary URL-derived UUID
    http.chunk_delay = 0.0

    missing = install(dsm, http.url("no-such-du.tar"))

    assert missing.fault is not None and missing.event is not None, missing
    assert (missing.event["CurrentState"], missing.event["DeploymentUnitRef"]) == ("Failed", "")
    assert missing.event["UUID"] == "00000000-0000-0000-0000-000000000000"  # the package never named the DU


def test_concurrent_failed_installs_each_get_their_own_event(dsm: DsmDaemon, http: FileServer) -> None:
    """Failed installs name no DU, so a waiting client knows its DUStateChange! by its request."""
    (Path(http.root) / "corrupt.tar").write_bytes(b"not a tar archive" * 64)
    http.chunk_delay = 0.02
    urls = {"missing": http.url("no-such-du.tar"), "corrupt": http.url("corrupt.tar")} | {
        f"missing-{n}": http.url(f"no-such-du-{n}.tar") for n in range(3)
    }
    with ThreadPoolExecutor(len(urls)) as pool:
        outcomes = dict(zip(urls, pool.map(lambda url: install(dsm, url), urls.values()), strict=True))
    http.chunk_delay = 0.0
    for name, outcome in outcomes.items():
        assert outcome.fault is not None and outcome.event is not None, (name, outcome)
        assert outcome.event["Fault.FaultCode"] == str(outcome.fault["code"]), (name, outcome)
    assert outcomes["corrupt"].fault["code"] != outcomes["missing"].fault["code"]  # type: ignore[index]


# == A1: Update() keeps the DU's identity ======================================================


def test_update_with_a_package_of_another_du_fails_and_keeps_the_old_version_running(
    dsm: DsmDaemon, archives: Path
) -> None:
    du, eu = installed(dsm, str(build_du(archives, "app3", "1.0.0")))
    euid = start(dsm, eu)["EUID"]
    pid = runc_state(dsm, euid)["pid"]  # type: ignore[index]

    outcome = operate(dsm, du + "Update()", {"URL": str(build_du(archives, "zzz", "9.0.0"))})

    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.UNKNOWN_DU.usp, outcome
    assert outcome.event is not None and outcome.event["Fault.FaultCode"] == str(FaultCode.UNKNOWN_DU.usp)
    assert outcome.event["CurrentState"] == "Installed"
    after = row(dsm, du)
    assert (after["Name"], after["Version"], after["UUID"]) == ("app3", "1.0.0", annex_c_uuid("app3", "acme"))
    running = wait_status(dsm, eu, "Active")
    assert running["Name"] == "app3"
    assert runc_state(dsm, euid)["pid"] == pid  # type: ignore[index]  # never stopped


# == A2: what starts after a reboot or a daemon restart ========================================


def remove_containers(dsm: DsmDaemon) -> None:
    """What a device reboot does to the runtime's state."""
    for container in dsm.containers():
        subprocess.run(["runc", "--root", str(dsm.runc_root), "delete", "--force", container], check=True)


def test_after_a_reboot_autostart_and_run_level_decide_what_starts(dsm: DsmDaemon, archives: Path) -> None:
    _, manual = installed(dsm, str(build_du(archives, "manual")))
    _, high = installed(dsm, str(build_du(archives, "high")))
    _, low = installed(dsm, str(build_du(archives, "low")))
    set_values(dsm, {EE1 + ".InitialRunLevel": 5})
    set_values(dsm, {high + "AutoStart": True, high + "RunLevel": 7, low + "AutoStart": True, low + "RunLevel": 3})
    start(dsm, manual)
    start(dsm, high)  # explicitly, above the run level

    dsm.stop()
    remove_containers(dsm)
    dsm.start()

    low_row = wait_status(dsm, low, "Active")
    time.sleep(1.0)
    assert (value(dsm, manual + "Status"), value(dsm, high + "Status")) == ("Idle", "Idle")
    assert dsm.containers() == [low_row["EUID"]]
    assert value(dsm, EE1 + ".CurrentRunLevel") == "5"


def test_a_daemon_restart_keeps_the_run_level_and_what_runs(dsm: DsmDaemon, archives: Path) -> None:
    _, eu = installed(dsm, str(build_du(archives, "keeper")))
    set_values(dsm, {eu + "AutoStart": True, eu + "RunLevel": 4})
    assert operate(dsm, EE1 + ".SetRunLevel()", {"RequestedRunLevel": 4}).ok
    euid = wait_status(dsm, eu, "Active")["EUID"]
    pid = runc_state(dsm, euid)["pid"]  # type: ignore[index]

    dsm.stop()
    dsm.start()

    # The ExecEnv did not restart (its containers ran on): CurrentRunLevel is not reset to
    # InitialRunLevel (0), which would leave a RunLevel 4 AutoStart EU running against the rules.
    assert value(dsm, EE1 + ".CurrentRunLevel") == "4"
    assert wait_status(dsm, eu, "Active")["EUID"] == euid
    assert runc_state(dsm, euid)["pid"] == pid  # type: ignore[index]


def test_an_eu_that_died_while_the_daemon_was_down_gets_its_fault_not_a_restart(dsm: DsmDaemon, archives: Path) -> None:
    _, other = installed(dsm, str(build_du(archives, "survivor")))
    _, eu = installed(dsm, str(build_du(archives, "victim")))
    start(dsm, other)
    euid = start(dsm, eu)["EUID"]

    dsm.stop()
    subprocess.run(["runc", "--root", str(dsm.runc_root), "kill", euid, "KILL"], check=True)
    eventually(lambda: (runc_state(dsm, euid) or {}).get("status") == "stopped", what="the container's death")
    dsm.start()

    idle = wait_status(dsm, eu, "Idle")
    time.sleep(1.0)
    assert value(dsm, eu + "Status") == "Idle"
    assert idle["ExecutionFaultCode"] == "FailureWhileActive"
    assert "not running" in idle["ExecutionFaultMessage"]
    assert value(dsm, other + "Status") == "Active"


# == A3: which refusals are Operate errors and which are outcomes (README "Outcomes") =========


@pytest.mark.parametrize(
    ("case", "args", "code", "in_event"),
    [
        ("unknown-execenv", {"ExecutionEnvRef": EE + "9"}, FaultCode.UNKNOWN_EE, False),
        ("userinfo-in-url", {"URL": "http://user:secret@127.0.0.1:9/x.tar"}, FaultCode.INVALID_ARGUMENTS, False),
        ("disabled-execenv", {"ExecutionEnvRef": EE2}, FaultCode.DISABLED_EE, True),
        (
            "required-roles",
            {"RequiredRoles": "Device.LocalAgent.ControllerTrust.Role.1"},
            FaultCode.UNAVAILABLE_ROLE,
            True,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_install_refusals_follow_the_outcome_rule(
    dsm: DsmDaemon, archives: Path, case: str, args: dict[str, str], code: FaultCode, in_event: bool
) -> None:
    outcome = install(dsm, str(build_du(archives, "refused")), **args)

    assert outcome.fault is not None and outcome.fault["code"] == code.usp, outcome
    if in_event:
        assert outcome.event is not None, outcome
        assert (outcome.event["CurrentState"], outcome.event["Fault.FaultCode"]) == ("Failed", str(code.usp))
    else:
        assert outcome.event is None
    assert rows(dsm, DU) == []


@pytest.mark.parametrize("command", ["Update()", "Uninstall()"])
def test_update_and_uninstall_on_a_disabled_execenv_fail_with_their_event(
    dsm: DsmDaemon, archives: Path, command: str
) -> None:
    du, _ = installed(dsm, str(build_du(archives, "stranded")))
    set_values(dsm, {EE1 + ".Enable": False})

    outcome = operate(
        dsm, du + command, {"URL": str(build_du(archives, "stranded", "2.0.0"))} if command == "Update()" else {}
    )

    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DISABLED_EE.usp, outcome
    assert outcome.event is not None, "TR-181 ExecEnv.Enable: 'the associated event will contain a FaultStruct'"
    assert (outcome.event["CurrentState"], outcome.event["Fault.FaultCode"]) == ("Installed", "7012")
    assert (value(dsm, du + "Status"), value(dsm, du + "Version")) == ("Installed", "1.0.0")


def test_a_request_on_a_du_with_an_operation_under_way_is_an_operate_error(
    dsm: DsmDaemon, http: FileServer, archives: Path
) -> None:
    du, _ = installed(dsm, str(build_du(archives, "busy")))
    build_du(archives, "busy", "2.0.0", out=Path(http.root) / "busy-2.tar")
    http.chunk_delay = 0.05
    events = dsm.events("Device.SoftwareModules.DUStateChange!")
    operate_async(dsm, du + "Update()", {"URL": http.url("busy-2.tar")})
    eventually(lambda: value(dsm, du + "Status") == "Updating", what="the update under way")

    refused = operate(dsm, du + "Uninstall()")

    assert refused.fault is not None and refused.fault["code"] == FaultCode.INVALID_DU_STATE.usp, refused
    assert refused.event is None
    done = events.du_state_change("Update")  # the operation under way reports its own outcome, once
    assert (done["CurrentState"], done["Fault.FaultCode"], done["Version"]) == ("Installed", "0", "2.0.0")
    with pytest.raises(TimeoutError):
        events.du_state_change("Uninstall", timeout=1.0)
