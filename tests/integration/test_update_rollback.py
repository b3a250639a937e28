"""Update() keeps the old version until the new one is proven (README "Update, settle and
rollback"): the real daemon, real runc, busybox bundles. A new version whose EU fails to
start, or exits within ``update_settle_time``, is rolled back: the old bundle, records and
data volumes come back and its EU runs again; DUStateChange! says Installed with 7022
(Command failure) and the EU shows FailureOnStart with the reason. Crashes during an Update
are in test_crash_recovery.py."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
    EE1,
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
    running_rootfs,
    top_entries,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

DIES_AT_ONCE = ("/bin/sh", "-c", "echo broken; exit 3")
DIES_SOON = ("/bin/sh", "-c", "sleep 0.5; exit 4")  # Active at first, gone within the settle time
APPDATA = EE1 + ".ApplicationData."
KEEPER = "trap 'exit 0' TERM; cat /data/mark 2>/dev/null || echo v1 > /data/mark; sleep 3600 & wait"
VOLUME = {"ApplicationData.1.Name": "db", "ApplicationData.1.Capacity": 4, "ApplicationData.1.Retain": "Forever",
          "ApplicationData.1.AccessPath": "/data", "ApplicationData.1.Encrypted": False}  # fmt: skip


@pytest.fixture
def dsm(tmp_path: Path) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(tmp_path, lcm={"update_settle_time": 2.0})
    try:
        yield daemon.start()
    finally:  # uninstalled: no volume stays mounted after a failure
        for path in rows(daemon, DU) if daemon.process and daemon.process.poll() is None else []:
            operate(daemon, path + "Uninstall()")
        daemon.cleanup()


def running(dsm: DsmDaemon, url: str, **args: object) -> tuple[str, str, str, str]:
    """Install and start: (DU row, EU row, EUID, bundle generation)."""
    outcome = install(dsm, url, **args)
    assert outcome.ok and outcome.event is not None, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    eu = eu_of(dsm, du)
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    euid = wait_status(dsm, eu, "Active")["EUID"]
    (generation,) = top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2])
    return du, eu, euid, generation


def assert_old_runs(dsm: DsmDaemon, du: str, eu: str, euid: str, generation: str) -> dict[str, str]:
    assert (row(dsm, du)["Version"], row(dsm, du)["Status"]) == ("1.0.0", "Installed")
    values = wait_status(dsm, eu, "Active")
    assert values["Version"] == "1.0.0"
    assert top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2]) == [generation]
    state = runc_state(dsm, euid)
    assert state is not None and state["status"] == "running"
    assert running_rootfs(state).endswith(f"/{generation}/rootfs")
    return values


@pytest.mark.parametrize("args", [DIES_AT_ONCE, DIES_SOON], ids=["fails-to-start", "dies-while-settling"])
def test_a_new_version_that_does_not_stay_active_is_rolled_back(dsm: DsmDaemon, args: tuple[str, ...]) -> None:
    du, eu, euid, generation = running(dsm, build_du(dsm.work, "svc").as_uri())
    broken = build_du(dsm.work, "svc", "2.0.0", args=args)

    outcome = operate(dsm, du + "Update()", {"URL": broken.as_uri()})

    assert outcome.event is not None
    assert (outcome.event["CurrentState"], outcome.event["Fault.FaultCode"]) == (
        "Installed",
        str(FaultCode.COMMAND_FAILURE.usp),
    )
    assert "did not stay Active" in outcome.event["Fault.FaultString"]
    values = assert_old_runs(dsm, du, eu, euid, generation)
    assert values["ExecutionFaultCode"] == "FailureOnStart"
    assert values["ExecutionFaultMessage"].startswith("update rolled back: ")
    # A good version afterwards updates as usual.
    assert operate(dsm, du + "Update()", {"URL": build_du(dsm.work, "svc", "3.0.0").as_uri()}).ok
    assert wait_status(dsm, eu, "Active")["Version"] == "3.0.0"


def test_the_du_is_updating_while_the_new_version_settles(dsm: DsmDaemon) -> None:
    du, eu, _, _ = running(dsm, build_du(dsm.work, "svc").as_uri())
    operate_async(dsm, du + "Update()", {"URL": build_du(dsm.work, "svc", "2.0.0").as_uri()})
    eventually(lambda: row(dsm, eu)["Version"] == "2.0.0" and row(dsm, eu)["Status"] == "Active", what="settling")
    assert row(dsm, du)["Status"] == "Updating"
    refused = operate(dsm, du + "Uninstall()")
    assert refused.fault is not None and refused.fault["code"] == FaultCode.INVALID_DU_STATE.usp, refused
    eventually(lambda: row(dsm, du)["Status"] == "Installed", what="the update's end")
    assert row(dsm, du)["Version"] == "2.0.0"


def test_an_unforeseen_error_while_settling_rolls_back_too(tmp_path: Path) -> None:
    daemon = DsmDaemon(tmp_path)
    try:
        daemon.start(env={"DSM_RAISE_AT": "update.started"})  # tests/support/fault_injection.py
        du, eu, euid, generation = running(daemon, build_du(tmp_path, "svc").as_uri())
        outcome = operate(daemon, du + "Update()", {"URL": build_du(tmp_path, "svc", "2.0.0").as_uri()})
        assert outcome.event is not None
        assert outcome.event["Fault.FaultCode"] == str(FaultCode.INTERNAL_ERROR.usp), outcome
        assert_old_runs(daemon, du, eu, euid, generation)
    finally:
        daemon.cleanup()


def test_settle_time_zero_only_asks_for_active(tmp_path: Path) -> None:
    daemon = DsmDaemon(tmp_path, lcm={"update_settle_time": 0.0})
    try:
        du, _, _, _ = running(daemon.start(), build_du(tmp_path, "svc").as_uri())
        outcome = operate(daemon, du + "Update()", {"URL": build_du(tmp_path, "svc", "2.0.0", args=DIES_SOON).as_uri()})
        assert outcome.ok and outcome.event is not None and outcome.event["Fault.FaultCode"] == "0", outcome
        assert row(daemon, du)["Version"] == "2.0.0"
    finally:
        daemon.cleanup()


def test_idle_eus_stay_idle_and_need_no_proof(dsm: DsmDaemon) -> None:
    outcome = install(dsm, build_du(dsm.work, "svc").as_uri())
    assert outcome.ok and outcome.event is not None, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    updated = operate(dsm, du + "Update()", {"URL": build_du(dsm.work, "svc", "2.0.0", args=DIES_AT_ONCE).as_uri()})
    assert updated.ok and updated.event is not None and updated.event["Fault.FaultCode"] == "0", updated
    assert row(dsm, eu_of(dsm, du))["Status"] == "Idle" and row(dsm, du)["Version"] == "2.0.0"


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (Debian package e2fsprogs)")
def test_a_rollback_restores_the_data_volumes(dsm: DsmDaemon) -> None:
    keeper = build_du(dsm.work, "keeper", args=("/bin/sh", "-c", KEEPER))
    du, eu, euid, generation = running(dsm, keeper.as_uri(), **VOLUME)
    volumes = dsm.state / "volumes"
    mark = volumes / "default-1" / "mnt" / "mark"
    eventually(lambda: mark.exists() and mark.read_text() == "v1\n", what="the old version's mark")
    # The update names a new volume only (no RetainData: "db" would go once proven); the
    # new version overwrites the old data and dies.
    broken = build_du(dsm.work, "keeper", "2.0.0", args=("/bin/sh", "-c", "echo v2 > /data/mark; exit 5"))
    cache = {**VOLUME, "ApplicationData.1.Name": "cache", "ApplicationData.1.AccessPath": "/cache"}

    outcome = operate(dsm, du + "Update()", {"URL": broken.as_uri(), **cache})

    assert outcome.event is not None and outcome.event["Fault.FaultCode"] == str(FaultCode.COMMAND_FAILURE.usp)
    assert_old_runs(dsm, du, eu, euid, generation)
    assert mark.read_text() == "v1\n"  # the old version's data, not the new one's write
    assert rows(dsm, APPDATA) == [APPDATA + "1."] and row(dsm, APPDATA + "1.")["Name"] == "db"
    assert sorted(p.name for p in volumes.iterdir()) == ["default-1"]  # "cache" is gone, "db" stays
    assert [p.name for p in (dsm.state / "bundles").rglob("*.data")] == []  # the copy is gone


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (Debian package e2fsprogs)")
def test_a_proven_update_removes_the_volumes_it_did_not_name(dsm: DsmDaemon) -> None:
    keeper = build_du(dsm.work, "keeper", args=("/bin/sh", "-c", KEEPER))
    du, eu, _, _ = running(dsm, keeper.as_uri(), **VOLUME)
    cache = {**VOLUME, "ApplicationData.1.Name": "cache", "ApplicationData.1.AccessPath": "/cache"}
    new = build_du(dsm.work, "keeper", "2.0.0", args=("/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"))

    assert operate(dsm, du + "Update()", {"URL": new.as_uri(), **cache}).ok

    assert [row(dsm, path)["Name"] for path in rows(dsm, APPDATA)] == ["cache"]
    assert sorted(p.name for p in (dsm.state / "volumes").iterdir()) == ["default-2"]
    for state in ("Idle", "Active"):  # and the new version starts again without the old volume
        assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": state}).ok
        wait_status(dsm, eu, state)


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (Debian package e2fsprogs)")
def test_a_kill_9_while_settling_restores_the_data_too(tmp_path: Path) -> None:
    daemon = DsmDaemon(tmp_path)
    try:
        daemon.start(env={"DSM_CRASH_AT": "update.started"})  # tests/support/fault_injection.py
        old = build_du(tmp_path, "keeper", args=("/bin/sh", "-c", KEEPER))
        du, eu, _, generation = running(daemon, old.as_uri(), **VOLUME)
        mark = daemon.state / "volumes" / "default-1" / "mnt" / "mark"
        eventually(lambda: mark.exists() and mark.read_text() == "v1\n", what="the old version's mark")
        new = build_du(tmp_path, "keeper", "2.0.0")
        operate_async(daemon, du + "Update()", {"URL": new.as_uri(), **VOLUME})  # no RetainData: "db" is emptied
        assert daemon.wait_exit(30) == -signal.SIGKILL

        daemon.start()

        assert (row(daemon, du)["Version"], row(daemon, eu)["Version"]) == ("1.0.0", "1.0.0")
        assert top_entries(daemon.state / "bundles" / du.rstrip(".").rpartition(".")[2]) == [generation]
        assert mark.read_text() == "v1\n"
        assert operate(daemon, du + "Uninstall()").ok
    finally:
        daemon.cleanup()
