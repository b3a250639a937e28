"""An ExecEnv's AllocatedMemory / AllocatedCPUPercent hold for Dobby EUs. Dobby puts each
container in a cgroup of its own named after it (its stats and plugins read it there), so
there is no ExecEnv parent cgroup: at start each EU's limits are lowered to what the
ExecEnv's running EUs leave of the allocation, and an EU that would get nothing does not
start. Checked in the containers' real cgroups, through the Dobby stand-in (and the real
DobbyDaemon with ``-m dobby_real``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dobby_daemons import Dobby
from tests.integration.lcm_helpers import INSTALL_DU, build_du, eu_of, eventually, operate, value, wait_status
from tests.integration.test_runtime_dobby import NEEDS_BUS_AND_RUNC
from tests.support.daemon import DsmDaemon

pytestmark = [
    *NEEDS_BUS_AND_RUNC,
    pytest.mark.skipif(
        not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        or not Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists(),
        reason="these checks read the cgroup v1 memory and cpu controllers; this host has none",
    ),
]
MiB = 1 << 20
EE = "Device.SoftwareModules.ExecEnv.1"


@pytest.fixture
def dsm(tmp_path: Path, dobby: Dobby) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(
        tmp_path,
        lcm={"usage_interval": 0.2},
        execenvs=[{"name": "dobby", "runtime": "dobby", "allocated_memory_kib": 65536, "allocated_cpu_percent": 50}],
        extra={"runtime.dobby": {"bus_address": dobby.bus.address}},
    )
    try:
        with dobby.run():
            daemon.start()
            yield daemon
    finally:
        daemon.cleanup()


def installed(dsm: DsmDaemon, name: str, **resources: int) -> str:
    args = {"URL": str(build_du(dsm.work, name)), "ExecutionEnvRef": EE, **resources}
    outcome = operate(dsm, INSTALL_DU, args)
    assert outcome.ok, outcome
    return eu_of(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")  # type: ignore[index]


def limits(dsm: DsmDaemon, eu: str) -> tuple[int, int]:
    """The running EU's memory limit (bytes) and CFS quota (us), from its container's cgroups."""
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")
    uid = value(dsm, eu + "EUID")
    processes = eventually(lambda: dsm.call("eu.detail", {"uid": uid}).get("processes"), 10, f"{uid}'s processes")
    paths = {}
    for line in Path(f"/proc/{processes[0]['pid']}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    memory = Path("/sys/fs/cgroup/memory" + paths["memory"], "memory.limit_in_bytes")
    cpu = Path("/sys/fs/cgroup/cpu" + paths["cpu"], "cpu.cfs_quota_us")
    return int(memory.read_text()), int(cpu.read_text())


def test_the_allocation_is_shared_out_among_running_dobby_eus(dsm: DsmDaemon) -> None:
    cpus = os.cpu_count() or 1
    ee_quota = round(0.5 * cpus * 100_000)
    first = installed(dsm, "first", **{"Resources.AllocatedMemory": 40960, "Resources.AllocatedCPUPercent": 50})
    second, third = installed(dsm, "second"), installed(dsm, "third")  # no limits of their own

    assert limits(dsm, first) == (40 * MiB, round(ee_quota * 0.5))
    # What the first leaves: 24 MiB and the rest of the ExecEnv's CPU quota.
    assert limits(dsm, second) == (24 * MiB, ee_quota - round(ee_quota * 0.5))
    # Nothing is left for a third.
    assert operate(dsm, third + "SetRequestedState()", {"RequestedState": "Active"}).ok
    failed = eventually(lambda: (r := value(dsm, third + "ExecutionFaultCode")) != "NoFault" and r, 15, "a fault")
    assert failed == "FailureOnStart"
    assert "memory allocation exceeded" in value(dsm, third + "ExecutionFaultMessage")
    assert value(dsm, third + "Status") == "Idle"

    # The first stops: the third gets what it held.
    assert operate(dsm, first + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    wait_status(dsm, first, "Idle")
    assert limits(dsm, third) == (40 * MiB, round(ee_quota * 0.5))
    # The first again, with its own 40 MiB: more than is left now, so it does not start.
    assert operate(dsm, first + "SetRequestedState()", {"RequestedState": "Active"}).ok
    eventually(lambda: value(dsm, first + "ExecutionFaultCode") == "FailureOnStart", 15, "the first's fault")

    # A daemon restart adopts the running EUs with what they hold: still nothing left.
    refusals = dsm.log().count("memory allocation exceeded")
    dsm.stop()
    dsm.start()
    wait_status(dsm, second, "Active")
    wait_status(dsm, third, "Active")
    assert operate(dsm, first + "SetRequestedState()", {"RequestedState": "Active"}).ok
    eventually(lambda: dsm.log().count("memory allocation exceeded") > refusals, 15, "the refusal")
    assert value(dsm, first + "Status") == "Idle"
