"""Application data volumes (ExecEnv.{i}.ApplicationData.{i}) against the real daemon and
real runc: a loop-mounted ext4 image of the volume's Capacity per volume (e2fsprogs,
util-linux), bind-mounted at AccessPath. Data survives Update (RetainData), a daemon restart
and an Uninstall with RetainData; a write past Capacity fails inside the container with
ENOSPC; volumes nobody owns are removed at start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
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
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [
    pytest.mark.integration,
    needs_runc,
    pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (Debian package e2fsprogs)"),
]

APPDATA = EE1 + ".ApplicationData."
# Counts its runs on the volume, then tries to write 8 MiB into a 4 MiB volume.
SCRIPT = (
    "trap 'exit 0' TERM; echo run >> /data/runs; echo runs=$(wc -l < /data/runs); "
    "head -c 8388608 /dev/zero | cat > /data/big; rm -f /data/big; echo checked; sleep 3600 & wait"
)
VOLUME = {"ApplicationData.1.Name": "db", "ApplicationData.1.Capacity": 4, "ApplicationData.1.Retain": "Forever",
          "ApplicationData.1.AccessPath": "/data", "ApplicationData.1.Encrypted": False}  # fmt: skip


@pytest.fixture
def dsm(tmp_path: Path) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(tmp_path)
    try:
        yield daemon.start()
    finally:
        for path in rows(daemon, DU) if daemon.process and daemon.process.poll() is None else []:
            operate(daemon, path + "Uninstall()")
        daemon.cleanup()


def log_of(dsm: DsmDaemon, eu: str) -> Path:
    return dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"


def run_once(dsm: DsmDaemon, eu: str, expected_runs: int) -> list[str]:
    """Start the EU, wait for its report, stop it; the log lines of this run."""
    log = log_of(dsm, eu)
    before = log.read_text().count("checked") if log.exists() else 0
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    eventually(lambda: log.exists() and log.read_text().count("checked") > before, 20, "the EU's report")
    lines = log.read_text().splitlines()
    assert f"runs={expected_runs}" in lines, lines
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    wait_status(dsm, eu, "Idle")
    return lines


def volumes_on_disk(dsm: DsmDaemon) -> list[str]:
    root = dsm.state / "volumes"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_a_volume_is_bounded_and_survives_update_restart_and_a_retaining_uninstall(dsm: DsmDaemon) -> None:
    outcome = install(dsm, build_du(dsm.work, "keeper", args=("/bin/sh", "-c", SCRIPT)).as_uri(), **VOLUME)
    assert outcome.ok, outcome
    du = outcome.event["DeploymentUnitRef"] + "."  # type: ignore[index]
    uuid = value(dsm, du + "UUID")
    eu = eu_of(dsm, du)
    volume = row(dsm, APPDATA + "1.")
    assert (volume["Name"], volume["Capacity"], volume["Retain"], volume["AccessPath"]) == (
        "db",
        "4",
        "Forever",
        "/data",
    )
    assert (volume["ApplicationUUID"], volume["Encrypted"]) == (uuid, "false")
    lines = run_once(dsm, eu, 1)
    assert any("No space left on device" in line for line in lines), lines
    assert 0 <= int(value(dsm, APPDATA + "1.Utilization")) <= 4

    update = build_du(dsm.work, "keeper", "2.0.0", args=("/bin/sh", "-c", SCRIPT))
    updated = operate(dsm, du + "Update()", {"URL": update.as_uri(), "RetainData": True, **VOLUME})
    assert updated.ok, updated
    run_once(dsm, eu, 2)

    dsm.stop()
    subprocess.run(["umount", str(dsm.state / "volumes" / "default-1" / "mnt")], check=True)  # as a reboot does
    (dsm.state / "volumes" / "default-99").mkdir()  # a volume nobody owns: removed at start
    dsm.start()
    assert volumes_on_disk(dsm) == ["default-1"]
    run_once(dsm, eu, 3)

    assert operate(dsm, du + "Uninstall()", {"RetainData": True}).ok
    assert rows(dsm, DU) == [] and rows(dsm, APPDATA) == [APPDATA + "1."]
    again = install(dsm, build_du(dsm.work, "keeper", "3.0.0", args=("/bin/sh", "-c", SCRIPT)).as_uri(), **VOLUME)
    assert again.ok, again
    run_once(dsm, eu_of(dsm, again.event["DeploymentUnitRef"] + "."), 4)  # type: ignore[index]

    assert operate(dsm, again.event["DeploymentUnitRef"] + ".Uninstall()").ok  # type: ignore[index]
    assert rows(dsm, APPDATA) == [] and volumes_on_disk(dsm) == []


def test_until_stopped_data_is_gone_at_the_next_start(dsm: DsmDaemon) -> None:
    volume = {**VOLUME, "ApplicationData.1.Retain": "UntilStopped"}
    outcome = install(dsm, build_du(dsm.work, "scratch", args=("/bin/sh", "-c", SCRIPT)).as_uri(), **volume)
    assert outcome.ok, outcome
    eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    run_once(dsm, eu, 1)
    run_once(dsm, eu, 1)


def test_an_encrypted_volume_is_refused_and_nothing_is_left(dsm: DsmDaemon) -> None:
    outcome = install(dsm, build_du(dsm.work, "secret", args=("/bin/true",)).as_uri(),
                      **{**VOLUME, "ApplicationData.1.Encrypted": True})  # fmt: skip
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.INVALID_ARGUMENTS.usp
    assert "encrypted" in outcome.fault["message"]
    assert rows(dsm, DU) == [] and rows(dsm, APPDATA) == [] and volumes_on_disk(dsm) == []


def test_a_crash_after_the_volume_was_made_leaves_no_volume(dsm: DsmDaemon) -> None:
    archive = build_du(dsm.work, "crashy", args=("/bin/sh", "-c", SCRIPT))
    dsm.stop()
    dsm.start(env={"DSM_CRASH_AT": "install.volumes"})
    operate_async(dsm, INSTALL_DU, {"URL": archive.as_uri(), "ExecutionEnvRef": EE1, **VOLUME})
    assert dsm.wait_exit(30) != 0
    assert volumes_on_disk(dsm) == ["default-1"]  # it was made, journaled as creating
    dsm.start()
    assert rows(dsm, DU) == [] and rows(dsm, APPDATA) == [] and volumes_on_disk(dsm) == []
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(dsm.state) in line]


def test_a_user_namespaced_eu_writes_its_volume_as_its_mapped_root() -> None:
    """With ``user_namespace`` the EU's root is a host UID of its range: the volume's top
    directory is given to it, so it writes there; the host sees the files owned by that UID,
    and Capacity holds as before."""
    work = Path(tempfile.mkdtemp(prefix="dsm-appdata-userns-", dir="/tmp"))
    work.chmod(0o711)  # a mapped root must reach its bundle (README "Confinement")
    (work / "bundles").mkdir(mode=0o711)
    base = 1_200_000 + (os.getpid() % 100) * 65536  # a range no other test daemon hands out
    dsm = DsmDaemon(work, lcm={"bundle_dir": str(work / "bundles"), "uid_range_base": base},
                    execenvs=[{"name": "default", "user_namespace": True}])  # fmt: skip
    try:
        dsm.start()
        outcome = install(dsm, build_du(work, "userns", args=("/bin/sh", "-c", SCRIPT)).as_uri(), **VOLUME)
        assert outcome.ok, outcome
        eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
        lines = run_once(dsm, eu, 1)  # wrote /data/runs, then failed to write past Capacity
        assert any("No space left on device" in line for line in lines), lines
        runs = dsm.state / "volumes" / "default-1" / "mnt" / "runs"
        assert (runs.stat().st_uid, runs.stat().st_gid) == (base, base)
        assert runs.read_text() == "run\n"
        run_once(dsm, eu, 2)  # and again at the next start
        assert operate(dsm, outcome.event["DeploymentUnitRef"] + ".Uninstall()").ok  # type: ignore[index]
    finally:
        dsm.cleanup()
        shutil.rmtree(work, ignore_errors=True)
