"""Crash recovery of the real ``dsm``: SIGKILL at every journaled step, then a restart.

``DSM_CRASH_AT=<point>`` makes the daemon kill itself at that ``crashpoint()`` of
dsm_tr181/lcm/deployments.py. After a restart without it the state must be consistent
(what recovery.py promises): an interrupted Install is rolled back, an Update is rolled
back until its new version was proven (lcm/deployments.py) and finished after, an
Uninstall is finished — rows, bundle directories, data copies, logs and runc containers
all agreeing.

What the code decides, and these tests pin down:

* ``install.committed`` comes after the commit of the Installed DU and its EU: the DU
  is fully installed after the restart. Its DUStateChange! was committed with it and is
  delivered after the restart (lcm/outcomes.py).
* A DUStateChange! that recovery publishes (interrupted install/update/uninstall) comes
  before the control socket and the buses serve: it is kept in the store and delivered to
  the first subscriber, once.
* An EU whose container died while the daemon was down rests Idle with
  FailureWhileActive: no silent restart (lcm/recovery.py).

Archives come from file:// (fast, deterministic); one daemon per case.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsm_tr181.control_client import ClientError
from dsm_tr181.errors import FaultCode
from dsm_tr181.lcm import deployments
from tests.integration.lcm_helpers import (
    DU,
    EU,
    INSTALL_DU,
    SM,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    operate_async,
    row,
    rows,
    runc_kill,
    runc_state,
    running_rootfs,
    top_entries,
    tree_files,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

INSTALL_POINTS = ["install.journaled", "install.unpacked", "install.volumes"]
UPDATE_BEFORE_SWAP = ["update.journaled", "update.unpacked", "update.stopped"]
# After the swap, before the new version is proven: on trial (it starts, settles) or failed
# (being rolled back). Either way the old version comes back.
UPDATE_ON_TRIAL = ["update.swapped", "update.started"]
UPDATE_ROLLING_BACK = ["update.rollback", "update.restored"]
UNINSTALL_POINTS = ["uninstall.journaled", "uninstall.stopped", "uninstall.removed"]
INTERRUPTED = FaultCode.REQUEST_DENIED.usp  # recovery.py: "interrupted by a restart ..."


@pytest.fixture(scope="module")
def du_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_du(tmp_path_factory.mktemp("crash-archives"), "crashy", "1.0.0")


@pytest.fixture(scope="module")
def du_v2(du_v1: Path) -> Path:
    return build_du(du_v1.parent, "crashy", "2.0.0", suffix=".tar.gz")


@pytest.fixture(scope="module")
def du_v2_broken(du_v1: Path) -> Path:
    """A new version whose EU exits at once: its Update rolls back."""
    return build_du(du_v1.parent, "crashy", "2.0.0", suffix=".broken.tar", args=("/bin/sh", "-c", "exit 3"))


@pytest.fixture(scope="module")
def other_du(du_v1: Path) -> Path:
    return build_du(du_v1.parent, "bystander", "1.0.0")


@dataclass
class Bystander:
    """Another DU, running, that the crash and the recovery must leave alone."""

    du: str
    eu: str
    euid: str
    pid: int
    generation: str

    def assert_untouched(self, dsm: DsmDaemon) -> None:
        assert row(dsm, self.du)["Status"] == "Installed"
        assert row(dsm, self.eu)["Status"] == "Active"
        state = runc_state(dsm, self.euid)
        assert state is not None and (state["status"], state["pid"]) == ("running", self.pid)
        assert generations(dsm, self.du) == [self.generation]
        assert (dsm.state / "logs" / f"{self.euid}.log").is_file()


def bystander(dsm: DsmDaemon, url: str) -> Bystander:
    du, eu, pid, generation = install_running(dsm, url)
    return Bystander(du, eu, value(dsm, eu + "EUID"), pid, generation)


@pytest.fixture
def dsm(tmp_path: Path) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(tmp_path)
    try:
        yield daemon
    finally:
        daemon.cleanup()


def crash(dsm: DsmDaemon, point: str, command: str, args: dict[str, str] | None = None) -> None:
    """Start ``command`` and wait for the daemon to kill itself at ``point``."""
    with contextlib.suppress(ClientError):  # it may die before it answers
        operate_async(dsm, command, args)
    assert dsm.wait_exit(30) == -signal.SIGKILL
    assert f"crash point {point} reached" in dsm.log()


def restart(dsm: DsmDaemon) -> str:
    """Start again without DSM_CRASH_AT; returns what the daemon logged since."""
    offset = len(dsm.log())
    dsm.start()
    return dsm.log()[offset:]


def events_logged(log: str, operation: str) -> list[tuple[str, str]]:
    """(CurrentState, fault) of the DUStateChange! lines of ``operation`` in a log."""
    return re.findall(rf"DUStateChange! {operation} of \S+ \(UUID \S+\): (\w+), (no fault|fault \d+)", log)


def staging_dirs(dsm: DsmDaemon) -> list[Path]:
    return list(dsm.state.rglob(".staging*"))


def assert_nothing_left(dsm: DsmDaemon) -> None:
    assert rows(dsm, DU) == [] and rows(dsm, EU) == []
    assert value(dsm, SM + "DeploymentUnitNumberOfEntries") == "0"
    assert value(dsm, SM + "ExecutionUnitNumberOfEntries") == "0"
    assert tree_files(dsm.state / "bundles") == []
    assert tree_files(dsm.state / "logs") == []
    assert staging_dirs(dsm) == []
    assert dsm.containers() == []


def install_running(dsm: DsmDaemon, url: str) -> tuple[str, str, int, str]:
    """Install and start: (DU row, EU row, container pid, bundle generation)."""
    outcome = install(dsm, url)
    assert outcome.ok and outcome.event is not None, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    eu = eu_of(dsm, du)
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    euid = wait_status(dsm, eu, "Active")["EUID"]
    state = runc_state(dsm, euid)
    assert state is not None
    (generation,) = top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2])
    return du, eu, int(state["pid"]), generation


def generations(dsm: DsmDaemon, du: str) -> list[str]:
    return top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2])


# == Install ===========================================================================


def test_every_crash_point_of_the_code_is_covered() -> None:
    source = (Path(deployments.__file__)).read_text()
    in_code = set(re.findall(r'crashpoint\("([a-z.]+)"\)', source))
    covered = {
        *INSTALL_POINTS,
        "install.committed",
        *UPDATE_BEFORE_SWAP,
        *UPDATE_ON_TRIAL,
        *UPDATE_ROLLING_BACK,
        "update.proven",
        *UNINSTALL_POINTS,
    }
    assert in_code == covered


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_install_interrupted_before_commit_is_rolled_back(
    dsm: DsmDaemon, du_v1: Path, other_du: Path, point: str
) -> None:
    other = bystander(dsm.start(), other_du.as_uri())  # installed by a daemon that does not crash
    dsm.stop()
    dsm.start(env={"DSM_CRASH_AT": point})
    crash(dsm, point, INSTALL_DU, {"URL": du_v1.as_uri(), "ExecutionEnvRef": SM + "ExecEnv.1"})

    log = restart(dsm)

    assert rows(dsm, DU) == [other.du] and rows(dsm, EU) == [other.eu]
    assert top_entries(dsm.state / "bundles") == [other.du.rstrip(".").rpartition(".")[2]]
    assert top_entries(dsm.state / "logs") == [f"{other.euid}.log"]
    assert staging_dirs(dsm) == []
    assert dsm.containers() == [other.euid]
    other.assert_untouched(dsm)
    assert "rolling back the interrupted installation" in log
    assert events_logged(log, "Install") == [("Failed", f"fault {INTERRUPTED}")]
    kept = dsm.events(SM + "DUStateChange!").du_state_change("Install")  # the first subscriber gets it
    assert (kept["CurrentState"], kept["Fault.FaultCode"], kept["DeploymentUnitRef"]) == ("Failed", "7002", "")
    later = dsm.events(SM + "DUStateChange!")
    with pytest.raises(TimeoutError):
        later.du_state_change("Install", timeout=1.0)  # delivered once
    # Nothing of the lost install stands in the way of installing it again.
    again = install(dsm, du_v1.as_uri())
    assert again.ok, again
    assert value(dsm, str(again.event["DeploymentUnitRef"]) + ".Status") == "Installed"  # type: ignore[index]


def test_install_interrupted_after_commit_is_a_complete_install(dsm: DsmDaemon, du_v1: Path) -> None:
    dsm.start(env={"DSM_CRASH_AT": "install.committed"})
    crash(dsm, "install.committed", INSTALL_DU, {"URL": du_v1.as_uri(), "ExecutionEnvRef": SM + "ExecEnv.1"})

    log = restart(dsm)

    (du,) = rows(dsm, DU)
    (eu,) = rows(dsm, EU)
    du_values = row(dsm, du)
    assert (du_values["Status"], du_values["Version"], du_values["Name"]) == ("Installed", "1.0.0", "crashy")
    assert du_values["ExecutionUnitList"] == eu.rstrip(".")
    assert row(dsm, eu)["Status"] == "Idle"
    (generation,) = generations(dsm, du)
    assert top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2] / generation) == [
        ".dsm-spec",
        "config.json",
        "rootfs",
    ]
    assert staging_dirs(dsm) == []
    assert "rolling back" not in log
    assert events_logged(log, "Install") == []  # nothing to redo: the committed outcome only waits for a listener
    kept = dsm.events(SM + "DUStateChange!").du_state_change("Install")
    assert (kept["CurrentState"], kept["Fault.FaultCode"]) == ("Installed", "0")
    assert kept["DeploymentUnitRef"] == du.rstrip(".")
    # and it works: the EU starts from the committed bundle.
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")


# == Update ============================================================================


@pytest.mark.parametrize("point", UPDATE_BEFORE_SWAP)
def test_update_interrupted_before_the_swap_is_rolled_back_and_the_eu_runs_again(
    dsm: DsmDaemon, du_v1: Path, du_v2: Path, other_du: Path, point: str
) -> None:
    dsm.start(env={"DSM_CRASH_AT": point})
    du, eu, pid, generation = install_running(dsm, du_v1.as_uri())
    other = bystander(dsm, other_du.as_uri())
    crash(dsm, point, du + "Update()", {"URL": du_v2.as_uri()})
    if point == "update.stopped":  # the new version was ready before the old one stopped
        (new,) = set(generations(dsm, du)) - {generation}
        bundle = dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2] / new
        assert [p.name for p in (bundle / ".dsm-spec").iterdir()] == ["default-1.json"]  # EU 1's container spec

    log = restart(dsm)

    du_values = row(dsm, du)
    assert (du_values["Status"], du_values["Version"], du_values["URL"]) == ("Installed", "1.0.0", du_v1.as_uri())
    euid = wait_status(dsm, eu, "Active")["EUID"]
    assert row(dsm, eu)["Version"] == "1.0.0"
    assert generations(dsm, du) == [generation]
    assert staging_dirs(dsm) == []
    state = runc_state(dsm, euid)
    assert state is not None and state["status"] == "running"
    assert running_rootfs(state).endswith(f"/{generation}/rootfs")
    if point == "update.stopped":
        assert state["pid"] != pid  # it had been stopped for the update: started again
    else:
        assert state["pid"] == pid  # it never stopped: adopted
    assert sorted(dsm.containers()) == sorted([euid, other.euid])
    other.assert_untouched(dsm)
    assert "rolling back the interrupted update" in log
    assert events_logged(log, "Update") == [("Installed", f"fault {INTERRUPTED}")]
    # The update can be done again.
    assert operate(dsm, du + "Update()", {"URL": du_v2.as_uri()}).ok
    assert value(dsm, du + "Version") == "2.0.0"


@pytest.mark.parametrize("point", UPDATE_ON_TRIAL + UPDATE_ROLLING_BACK)
def test_update_interrupted_before_the_new_version_is_proven_is_rolled_back(
    dsm: DsmDaemon, du_v1: Path, du_v2: Path, du_v2_broken: Path, other_du: Path, point: str
) -> None:
    dsm.start(env={"DSM_CRASH_AT": point})
    du, eu, pid, generation = install_running(dsm, du_v1.as_uri())
    other = bystander(dsm, other_du.as_uri())
    new = du_v2_broken if point in UPDATE_ROLLING_BACK else du_v2
    crash(dsm, point, du + "Update()", {"URL": new.as_uri()})

    log = restart(dsm)

    du_values = row(dsm, du)
    assert (du_values["Status"], du_values["Version"], du_values["URL"]) == ("Installed", "1.0.0", du_v1.as_uri())
    euid = wait_status(dsm, eu, "Active")["EUID"]
    assert row(dsm, eu)["Version"] == "1.0.0"
    assert generations(dsm, du) == [generation]  # the new bundle and the data copy are gone
    assert staging_dirs(dsm) == []
    state = runc_state(dsm, euid)
    assert state is not None and state["status"] == "running" and state["pid"] != pid
    assert running_rootfs(state).endswith(f"/{generation}/rootfs")
    assert sorted(dsm.containers()) == sorted([euid, other.euid])
    other.assert_untouched(dsm)
    assert "the new version was not proven" in log
    assert events_logged(log, "Update") == [("Installed", f"fault {INTERRUPTED}")]
    assert operate(dsm, du + "Update()", {"URL": du_v2.as_uri()}).ok  # and it can be done again
    assert value(dsm, du + "Version") == "2.0.0"


def test_update_interrupted_once_proven_is_finished(dsm: DsmDaemon, du_v1: Path, du_v2: Path) -> None:
    dsm.start(env={"DSM_CRASH_AT": "update.proven"})
    du, eu, pid, old_generation = install_running(dsm, du_v1.as_uri())
    crash(dsm, "update.proven", du + "Update()", {"URL": du_v2.as_uri()})

    log = restart(dsm)

    du_values = row(dsm, du)
    assert (du_values["Status"], du_values["Version"], du_values["URL"]) == ("Installed", "2.0.0", du_v2.as_uri())
    euid = wait_status(dsm, eu, "Active")["EUID"]
    assert row(dsm, eu)["Version"] == "2.0.0"
    (new_generation,) = generations(dsm, du)
    assert new_generation != old_generation
    state = runc_state(dsm, euid)
    assert state is not None and state["status"] == "running" and state["pid"] != pid
    assert running_rootfs(state).endswith(f"/{new_generation}/rootfs")
    assert "finishing the interrupted update" in log
    assert events_logged(log, "Update") == [("Installed", "no fault")]


# == Uninstall =========================================================================


@pytest.mark.parametrize("point", UNINSTALL_POINTS)
def test_uninstall_interrupted_is_finished(dsm: DsmDaemon, du_v1: Path, point: str) -> None:
    dsm.start(env={"DSM_CRASH_AT": point})
    du, _, _, _ = install_running(dsm, du_v1.as_uri())
    crash(dsm, point, du + "Uninstall()")

    log = restart(dsm)

    assert_nothing_left(dsm)
    assert rows(dsm, "Device.DeviceInfo.VendorLogFile.") == []
    assert "finishing the interrupted uninstall" in log
    assert events_logged(log, "Uninstall") == [("Uninstalled", "no fault")]


def test_uninstall_interrupted_leaves_other_dus_alone(dsm: DsmDaemon, du_v1: Path, other_du: Path) -> None:
    dsm.start(env={"DSM_CRASH_AT": "uninstall.journaled"})
    du, _, _, _ = install_running(dsm, du_v1.as_uri())
    other = bystander(dsm, other_du.as_uri())
    crash(dsm, "uninstall.journaled", du + "Uninstall()")

    restart(dsm)

    assert rows(dsm, DU) == [other.du] and rows(dsm, EU) == [other.eu]
    assert top_entries(dsm.state / "logs") == [f"{other.euid}.log"]
    assert dsm.containers() == [other.euid]
    other.assert_untouched(dsm)


# == the daemon dies while an EU runs ========================================================


def test_running_container_is_adopted_after_kill_9_and_can_be_stopped(dsm: DsmDaemon, du_v1: Path) -> None:
    dsm.start()
    _, eu, pid, _ = install_running(dsm, du_v1.as_uri())
    euid = value(dsm, eu + "EUID")

    dsm.kill9()
    assert runc_state(dsm, euid)["status"] == "running"  # type: ignore[index]  # it outlives the daemon
    log = restart(dsm)

    assert row(dsm, eu)["Status"] == "Active"  # adopted during start-up, before READY
    state = runc_state(dsm, euid)
    assert state is not None and (state["status"], state["pid"]) == ("running", pid)
    assert "adopting the running container" in log
    assert dsm.containers() == [euid]
    # The new daemon stops a container an earlier one started.
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    idle = wait_status(dsm, eu, "Idle")
    assert idle["ExecutionFaultCode"] == "NoFault"
    assert dsm.containers() == []


def test_adopted_container_is_watched_for_its_exit(dsm: DsmDaemon, du_v1: Path) -> None:
    dsm.start()
    _, eu, _, _ = install_running(dsm, du_v1.as_uri())
    euid = value(dsm, eu + "EUID")
    dsm.kill9()
    restart(dsm)
    assert row(dsm, eu)["Status"] == "Active"

    runc_kill(dsm, euid)

    # Its exit status went to its real parent, not to this daemon: "unknown".
    idle = wait_status(dsm, eu, "Idle")
    assert (idle["ExecutionFaultCode"], idle["ExecutionFaultMessage"]) == (
        "FailureWhileActive",
        "container exited (status unknown)",
    )


def test_container_killed_while_the_daemon_was_down_gets_its_fault_not_a_silent_restart(
    dsm: DsmDaemon, du_v1: Path
) -> None:
    dsm.start()
    _, eu, _, _ = install_running(dsm, du_v1.as_uri())
    euid = value(dsm, eu + "EUID")
    dsm.kill9()
    runc_kill(dsm, euid)
    eventually(lambda: (runc_state(dsm, euid) or {}).get("status") != "running", what="the container to die")

    restart(dsm)

    idle = wait_status(dsm, eu, "Idle")  # only AutoStart/RunLevel start EUs, and only when the ExecEnv starts
    assert idle["ExecutionFaultCode"] == "FailureWhileActive"
    assert "not running" in idle["ExecutionFaultMessage"]
    assert runc_state(dsm, euid) is None
