"""Paths of the LCM no other test walked: AutoRestart's back-off, ExecEnv Restart() and Reset()
(with the configured preinstalled DUs restored), and the Available* resource figures, through
the real daemon, real runc containers and the real system's figures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsm_tr181.lcm.executions import _backoff
from tests.integration.lcm_helpers import (
    EE1,
    SM,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    row,
    rows,
    set_values,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

EE = EE1 + "."


def du_of(outcome: object) -> str:
    assert outcome.ok, outcome.fault  # type: ignore[attr-defined]
    return str(outcome.event["DeploymentUnitRef"]) + "."  # type: ignore[attr-defined]


@pytest.mark.unit
@given(
    st.integers(0, 20), st.integers(0, 600), st.integers(0, 4000), st.integers(0, 8)
)  # fmt: skip
def test_backoff_lies_between_the_standards_bounds(minimum: int, maximum: int, multiplier: int, count: int) -> None:
    """TR-181 AutoRestart: the n-th wait is within [m·(k/1000)^n, m·(k/1000)^(n+1)], capped by the maximum."""
    delay = _backoff(minimum, maximum, multiplier, count)
    m, k = max(minimum, 1), max(multiplier, 1000) / 1000
    low, high = m * k**count, m * k ** (count + 1)
    if maximum:
        low, high = min(low, maximum), min(high, maximum)
    assert low <= delay <= high


@pytest.mark.integration
@needs_runc
def test_auto_restart_backs_off_and_stops_at_the_maximum_retry_count(tmp_path: Path) -> None:
    crashing = ("/bin/sh", "-c", "echo run; sleep 0.5; exit 3")  # runs a moment: it started, then failed
    archive = build_du(tmp_path / "archives", "crasher", args=crashing)
    dsm = DsmDaemon(tmp_path).start()
    try:
        eu = eu_of(dsm, du_of(install(dsm, str(archive))))
        restart = eu + "AutoRestart."
        set_values(dsm, {
            restart + "Enable": True, restart + "RetryMinimumWaitInterval": 1,
            restart + "RetryIntervalMultiplier": 3000, restart + "RetryMaximumWaitInterval": 60,
            restart + "MaximumRetryCount": 2,
        })  # fmt: skip
        events = dsm.events(restart)
        began = time.monotonic()
        assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
        retries: dict[str, float] = {}
        while len(retries) < 2:
            event = events.wait_for(lambda e: e.get("path") == restart + "RetryCount" and e.get("value") != "0")
            retries[event["value"]] = time.monotonic()
        restarted = events.wait_for(lambda e: e.get("path") == restart + "LastRestarted")
        assert restarted["value"] != "0001-01-01T00:00:00Z"
        log_file = dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"
        eventually(lambda: log_file.read_text().count("run") == 3, what="three runs: the first and two restarts")
        # Waits: about 2 s (1·3^0 .. 1·3^1) before the first restart, about 6 s (3 .. 9) before the second.
        first_wait, second_wait = retries["1"] - began, retries["2"] - retries["1"]
        assert second_wait >= 1 and first_wait < second_wait
        final = wait_status(dsm, eu, "Idle")
        assert final["ExecutionFaultCode"] == "FailureWhileActive"
        settled = row(dsm, restart)
        assert settled["RetryCount"] == "2" and settled["NextRestart"] != ""
        time.sleep(1)
        assert log_file.read_text().count("run") == 3  # no third restart: MaximumRetryCount
    finally:
        dsm.cleanup()


@pytest.mark.integration
@needs_runc
def test_execenv_restart_and_reset_restore_the_configured_state(tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    preinstalled = build_du(archives, "factory")
    extra = build_du(archives, "later")
    dsm = DsmDaemon(
        tmp_path, lcm={"preinstalled": [str(preinstalled)]}, execenvs=[{"name": "default", "initial_run_level": 2}]
    ).start()
    try:
        assert rows(dsm, SM + "DeploymentUnit.") == []  # preinstalled DUs come back with Reset(), not before
        later_du = du_of(install(dsm, str(extra)))
        later_eu = eu_of(dsm, later_du)
        set_values(dsm, {later_eu + "AutoStart": True, later_eu + "RunLevel": 1, EE + "InitialRunLevel": 7})

        # Restart(): everything stops, the counters move, Restarted! is sent, AutoStart EUs run again.
        events = dsm.events(EE)
        assert operate(dsm, EE + "Restart()", {"Reason": "maintenance"}).ok
        restarted = events.wait_for(lambda e: e.get("path") == EE + "Restarted!")
        assert restarted["args"]["RestartReason"] == "maintenance"
        after = row(dsm, EE)
        assert (after["Status"], after["RestartCount"], after["RestartReason"]) == ("Up", "1", "maintenance")
        assert after["CurrentRunLevel"] == "7" and after["LastRestarted"] != "0001-01-01T00:00:00Z"
        wait_status(dsm, later_eu, "Active")

        # Reset(): the DUs installed are gone, the configured settings are back, the
        # preinstalled DU is installed, then a restart with the reason "Reset".
        assert operate(dsm, EE + "Reset()").ok
        eventually(lambda: row(dsm, EE)["RestartCount"] == "2", what="the restart that ends Reset()")
        after = row(dsm, EE)
        assert (after["RestartReason"], after["InitialRunLevel"], after["CurrentRunLevel"]) == ("Reset", "2", "2")
        [restored] = rows(dsm, SM + "DeploymentUnit.")
        assert value(dsm, restored + "Name") == "factory" and value(dsm, restored + "Status") == "Installed"
        assert restored != later_du
        assert dsm.containers() == []  # the uninstalled DU's EU was stopped
    finally:
        dsm.cleanup()


def meminfo_available_kib() -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    return int(line.split()[1])


@pytest.mark.integration
@needs_runc
def test_available_figures_are_the_systems_within_the_allocation(tmp_path: Path) -> None:
    archive = build_du(tmp_path / "archives", "sized")
    allocated_disk, allocated_memory = 50_000, 200_000
    execenvs = [
        {"name": "default"},
        {"name": "bounded", "allocated_disk_kib": allocated_disk, "allocated_memory_kib": allocated_memory},
    ]
    dsm = DsmDaemon(tmp_path, execenvs=execenvs).start()
    try:
        unbounded, bounded = EE1 + ".", SM + "ExecEnv.2."
        st_fs = os.statvfs(dsm.state)
        free_kib = st_fs.f_bavail * st_fs.f_frsize // 1024
        assert abs(int(value(dsm, unbounded + "AvailableDiskSpace")) - free_kib) < 50_000
        assert abs(int(value(dsm, unbounded + "AvailableMemory")) - meminfo_available_kib()) < 200_000
        assert value(dsm, bounded + "AvailableDiskSpace") == str(allocated_disk)
        assert value(dsm, bounded + "AvailableMemory") == str(allocated_memory)

        du = du_of(install(dsm, str(archive), ExecutionEnvRef=SM + "ExecEnv.2"))
        used_disk = int(value(dsm, eu_of(dsm, du) + "DiskSpaceInUse"))
        assert used_disk > 0
        assert value(dsm, bounded + "AvailableDiskSpace") == str(allocated_disk - used_disk)
        eu = eu_of(dsm, du)
        assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
        wait_status(dsm, eu, "Active")
        memory = int(eventually(lambda: int(value(dsm, eu + "MemoryInUse")) > 0 and value(dsm, eu + "MemoryInUse")))
        available = int(value(dsm, bounded + "AvailableMemory"))
        assert allocated_memory - 2 * memory <= available <= allocated_memory - memory // 2  # sampled apart
        assert int(value(dsm, unbounded + "AvailableCPUPercent")) in range(-1, 101)
    finally:
        dsm.cleanup()
