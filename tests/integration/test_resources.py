"""Resource limits and monitoring against the real daemon and real runc containers.

The ExecEnv ``limited`` has AllocatedMemory 64 MiB and AllocatedCPUPercent 50 (of this
machine's CPUs), ``tight`` AllocatedDiskSpace 3 MiB (one busybox DU fits, two do not).
The parent cgroup of an ExecEnv carries its limits, each
EU's cgroup its own ``Resources.*`` ones. What the kernel enforces is read from the cgroup
files and from the container's behaviour (an OOM kill), never from what the daemon says.
runc uses the cgroup v1 controllers on this hybrid host; the v1 files are checked.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.config import default_instance_name
from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
    EE,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    row,
    rows,
    tree_files,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

V1 = Path("/sys/fs/cgroup")
needs_v1_memory = pytest.mark.skipif(
    not (V1 / "memory" / "memory.limit_in_bytes").exists() or not (V1 / "cpu" / "cpu.cfs_quota_us").exists(),
    reason="runc uses the cgroup v1 memory and cpu controllers in these checks; this host has none",
)
MiB = 1 << 20
HOLD = "trap 'exit 0' TERM; head -c {size} /dev/zero > /dev/shm/fill; echo held; sleep 3600 & wait"
# The shell keeps the whole output in its own memory: past the limit the OOM killer kills it.
HOG = "x=$(yes | head -c 200000000); echo survived ${#x}"


@pytest.fixture(scope="module")
def dsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DsmDaemon]:
    work = tmp_path_factory.mktemp("resources")
    execenvs = [
        {"name": "default"},
        {"name": "limited", "allocated_memory_kib": 65536, "allocated_cpu_percent": 50},
        {"name": "tight", "allocated_disk_kib": 3072},
    ]
    daemon = DsmDaemon(work, lcm={"disk_usage_interval": 0.5}, execenvs=execenvs)
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(autouse=True)
def uninstall_all(dsm: DsmDaemon) -> Iterator[None]:
    yield
    for path in rows(dsm, DU):
        operate(dsm, path + "Uninstall()")


def ee_ref(dsm: DsmDaemon, name: str) -> str:
    for path in rows(dsm, EE):
        if value(dsm, path + "Name") == name:
            return path.rstrip(".")
    raise AssertionError(name)


def installed(dsm: DsmDaemon, name: str, args: tuple[str, ...], execenv: str = "limited", **inputs: Any) -> str:
    archive = build_du(dsm.work, name, args=args)
    outcome = install(dsm, archive.as_uri(), ExecutionEnvRef=ee_ref(dsm, execenv), **inputs)
    assert outcome.ok, outcome
    return eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]


def start(dsm: DsmDaemon, eu: str) -> None:
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok


def cgroup(dsm: DsmDaemon, controller: str, *parts: str) -> Path:
    return V1 / controller / default_instance_name(dsm.state) / "limited" / "/".join(parts)


@needs_v1_memory
def test_execenv_and_eu_limits_are_in_the_cgroup_files(dsm: DsmDaemon) -> None:
    eu = installed(dsm, "limits", ("/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"),
                   **{"Resources.AllocatedMemory": 32768, "Resources.AllocatedCPUPercent": 50})  # fmt: skip
    start(dsm, eu)
    current = wait_status(dsm, eu, "Active")
    assert (current["AllocatedMemory"], current["AllocatedCPUPercent"], current["AllocatedDiskSpace"]) == (
        "32768", "50", "-1"
    )  # fmt: skip
    euid = current["EUID"]
    cpus = os.cpu_count() or 1
    # The ExecEnv: 64 MiB and 50 % of all CPUs; the EU: 32 MiB and half of the ExecEnv's CPU.
    assert int(cgroup(dsm, "memory", "memory.limit_in_bytes").read_text()) == 64 * MiB
    assert int(cgroup(dsm, "cpu", "cpu.cfs_quota_us").read_text()) == round(0.5 * cpus * 100_000)
    assert int(cgroup(dsm, "memory", euid, "memory.limit_in_bytes").read_text()) == 32 * MiB
    assert int(cgroup(dsm, "cpu", euid, "cpu.cfs_quota_us").read_text()) == round(0.25 * cpus * 100_000)
    assert int(cgroup(dsm, "cpu", euid, "cpu.cfs_period_us").read_text()) == 100_000


@needs_v1_memory
def test_an_eu_past_its_memory_limit_is_oom_killed_and_shows_it(dsm: DsmDaemon) -> None:
    eu = installed(dsm, "hog", ("/bin/sh", "-c", HOG), **{"Resources.AllocatedMemory": 16384})
    start(dsm, eu)

    def failed() -> dict[str, str] | None:
        current = row(dsm, eu)
        return current if current["ExecutionFaultCode"] == "FailureWhileActive" else None

    current = eventually(failed, 30, "the OOM kill")
    assert current["Status"] == "Idle"
    assert "OOM killer" in current["ExecutionFaultMessage"], current
    assert "16384 KiB" in current["ExecutionFaultMessage"]
    assert "survived" not in (dsm.state / "logs" / f"{current['EUID']}.log").read_text()


@needs_v1_memory
def test_memory_in_use_reads_what_the_container_holds(dsm: DsmDaemon) -> None:
    held = 40
    eu = installed(dsm, "holder", ("/bin/sh", "-c", HOLD.format(size=held * MiB)), execenv="default")
    start(dsm, eu)
    log = dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"
    eventually(lambda: log.exists() and "held" in log.read_text(), 20, "the container to fill its memory")

    def sampled() -> int | None:
        kib = int(value(dsm, eu + "MemoryInUse"))
        return kib if kib > held * 1024 * 0.9 else None

    kib = eventually(sampled, 10, "a MemoryInUse sample")
    assert abs(kib - held * 1024) <= held * 1024 * 0.1, kib
    assert 0 <= int(value(dsm, eu + "CPUPercentInUse")) <= 100


def test_an_install_past_the_execenv_disk_allocation_fails_and_leaves_nothing(dsm: DsmDaemon) -> None:
    archive = build_du(dsm.work, "big", args=("/bin/true",))  # busybox alone is ~2 MiB
    first = install(dsm, archive.as_uri(), ExecutionEnvRef=ee_ref(dsm, "tight"))
    assert first.ok, first
    bundles = tree_files(dsm.state / "bundles")
    second = install(dsm, build_du(dsm.work, "bigger", args=("/bin/true",)).as_uri(),
                     ExecutionEnvRef=ee_ref(dsm, "tight"))  # fmt: skip
    assert second.fault is not None and second.fault["code"] == FaultCode.SYSTEM_RESOURCES_EXCEEDED.usp
    assert "3072 KiB allocation" in second.fault["message"]
    assert len(rows(dsm, DU)) == 1
    assert tree_files(dsm.state / "bundles") == bundles


def test_eu_inputs_above_the_execenv_allocation_are_refused(dsm: DsmDaemon) -> None:
    archive = build_du(dsm.work, "greedy", args=("/bin/true",))
    outcome = install(dsm, archive.as_uri(), ExecutionEnvRef=ee_ref(dsm, "limited"),
                      **{"Resources.AllocatedMemory": 131072})  # fmt: skip
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.SYSTEM_RESOURCES_EXCEEDED.usp
    assert "exceeds execution environment 'limited'" in outcome.fault["message"]
    assert rows(dsm, DU) == []


@needs_v1_memory
def test_a_start_past_the_execenv_memory_allocation_fails_with_a_message(dsm: DsmDaemon) -> None:
    sleeper = ("/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
    first = installed(dsm, "first", sleeper, **{"Resources.AllocatedMemory": 49152})
    second = installed(dsm, "second", sleeper, **{"Resources.AllocatedMemory": 32768})
    start(dsm, first)
    wait_status(dsm, first, "Active")
    start(dsm, second)

    def refused() -> dict[str, str] | None:
        current = row(dsm, second)
        return current if current["ExecutionFaultCode"] == "FailureOnStart" else None

    current = eventually(refused, 20, "the refused start")
    assert current["Status"] == "Idle"
    assert current["ExecutionFaultMessage"].startswith("memory allocation exceeded"), current
    assert "16384 KiB of its 65536 KiB left" in current["ExecutionFaultMessage"]


def test_disk_space_in_use_counts_rootfs_writes_and_eu_detail_lists_the_processes(dsm: DsmDaemon) -> None:
    source = dsm.work / "src" / "writer"
    shutil.rmtree(source, ignore_errors=True)
    script = "trap 'exit 0' TERM; head -c 3145728 /dev/zero > /written; echo wrote; sleep 3600 & wait"
    make_bundle(source, args=("/bin/sh", "-c", script))
    config = json.loads((source / "config.json").read_text())
    config["root"]["readonly"] = False
    (source / "config.json").write_text(json.dumps(config))
    archive = make_archive(source, dsm.work / "writer.tar")
    outcome = install(dsm, archive.as_uri(), ExecutionEnvRef=ee_ref(dsm, "default"))
    assert outcome.ok, outcome
    eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    before = eventually(lambda: int(value(dsm, eu + "DiskSpaceInUse")) or None, 10, "a first disk sample")
    start(dsm, eu)
    grown = eventually(
        lambda: (kib := int(value(dsm, eu + "DiskSpaceInUse"))) >= before + 3072 and kib, 20, "the write to be counted"
    )
    assert grown < before + 3072 + 512
    euid = value(dsm, eu + "EUID")
    commands = eventually(
        lambda: [p["command"] for p in dsm.call("eu.detail", {"uid": euid}).get("processes", [])], 10, "a sample"
    )
    assert any(command.startswith("/bin/sh -c trap") for command in commands), commands
    assert "sleep 3600" in commands, commands
    assert value(dsm, eu + "AssociatedProcessList") == ""  # ProcessStatus.Process rows are not served


@needs_v1_memory
def test_memory_in_use_is_sampled_when_read(tmp_path: Path) -> None:
    # An hour between samples: a periodic sampler would show nothing yet; a read samples at once.
    daemon = DsmDaemon(tmp_path, lcm={"usage_interval": 3600.0}).start()
    try:
        held = 40
        eu = installed(daemon, "held", ("/bin/sh", "-c", HOLD.format(size=held * MiB)), execenv="default")
        start(daemon, eu)
        log = daemon.state / "logs" / f"{value(daemon, eu + 'EUID')}.log"
        eventually(lambda: log.exists() and "held" in log.read_text(), 20, "the container to fill its memory")
        kib = int(value(daemon, eu + "MemoryInUse"))
        assert abs(kib - held * 1024) <= held * 1024 * 0.1, kib
    finally:
        daemon.cleanup()
