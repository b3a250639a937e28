"""The cgroup-v2 path of limits and monitoring, with crun and with runc each in a private
mount namespace where only cgroup2 is mounted at /sys/fs/cgroup (``cgroup2_mount_namespace``),
as a v2-only host runs them.

This machine is hybrid: memory, cpu and pids are bound to cgroup v1, so its v2 hierarchy
has none of them. What v2 gives here is checked for real: the container's cgroup is found
in the v2 hierarchy (not in the v1 ones it shares with the daemon), its CPU time comes from
``cpu.stat`` and its processes from ``cgroup.procs``, and a limit the v2 hierarchy cannot
enforce fails the start with a message instead of being dropped. Where the v2 hierarchy
has the memory and cpu controllers (a v2-only host), the same tests check the ExecEnv's
parent cgroup (``memory.max``, ``cpu.max``), the EU's own limits and the OOM kill read from
``memory.events``; here those cases are skipped with the reason, and the v2 reading and
writing code is checked against a directory laid out as such a hierarchy (a stand-in for
the controllers this host cannot move to v2, see tests/unit/test_cgroup_v2_files.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_bundle

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec
from dsm_tr181.containerspec.resources import Limits, execenv_resources
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerExit, StartSpec
from dsm_tr181.runtimes.cgroups import _V2, _cgroup_mounts, container_dirs
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig

pytestmark = pytest.mark.integration

RUNTIMES = {
    "crun": {"binary": "crun", "cgroup2_mount_namespace": True, "device_rules": False, "kill_timeout": 3},
    "runc": {"binary": "runc", "cgroup2_mount_namespace": True, "kill_timeout": 3},
}
BUSY = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo busy done; exec sleep 3600"
UNLIMITED = Limits()
HOG = "x=$(yes | head -c 200000000); echo survived ${#x}"  # the shell holds it all: past the limit, OOM


def _v2_mount() -> Path | None:
    entry = _cgroup_mounts().get(_V2)
    return entry[1] if entry is not None and entry[0] == "/" else None


def _v2_controllers() -> set[str]:
    mount = _v2_mount()
    return set((mount / "cgroup.controllers").read_text().split()) if mount is not None else set()


def _unavailable(binary: str) -> str | None:
    if os.geteuid() != 0:
        return "running containers needs root"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    missing = [name for name in (binary, "unshare", "mount") if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    if _v2_mount() is None:
        return "no cgroup2 hierarchy is mounted on this host"
    return None


HAS_V2_LIMITS = {"memory", "cpu"} <= _v2_controllers()
NO_V2_LIMITS = (
    "this host's cgroup v2 hierarchy has no memory/cpu controller (bound to cgroup v1: a hybrid host); "
    "the v2 limit files are checked against a stand-in tree in tests/unit/test_cgroup_v2_files.py"
)


@dataclass
class V2:
    tmp: Path
    instance: str
    runtime: OciRuntime
    exits: list[ContainerExit]

    def spec(self, container_id: str, args: str, eu: Limits = UNLIMITED, ee: Limits = UNLIMITED) -> StartSpec:
        bundle = make_bundle(self.tmp / "bundles" / container_id, args=("/bin/sh", "-c", args))
        config = json.loads((bundle / "config.json").read_text())
        cgroup = f"/{self.instance}/ee/{container_id}"
        context = SpecContext("ee", container_id, cgroup, platform.machine(), execenv_limits=ee, cpus=2)
        spec = effective_spec(config, str(bundle), EuInputs(resources=eu), ConfinementPolicy(), context)
        return StartSpec(container_id, spec, self.tmp / "logs" / f"{container_id}.log",
                         execenv_resources=execenv_resources(ee, 2))  # fmt: skip

    def v2_dir(self, *parts: str) -> Path:
        mount = _v2_mount()
        assert mount is not None
        return mount.joinpath(self.instance, *parts)


@pytest.fixture(params=list(RUNTIMES))
def v2(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[V2]:
    reason = _unavailable(request.param)
    if reason:
        pytest.skip(reason)
    runtime = OciRuntime(OciRuntimeConfig.from_config(RUNTIMES[request.param]), tmp_path / "state")
    exits: list[ContainerExit] = []
    runtime.watch(exits.append)
    harness = V2(tmp_path, f"dsm-v2-{uuid.uuid4().hex[:8]}", runtime, exits)
    try:
        yield harness
    finally:
        top = harness.v2_dir()
        for directory in sorted((d for d in top.glob("**/") if d.is_dir()), reverse=True) if top.exists() else []:
            directory.rmdir()


async def _stop_all(v2: V2, *container_ids: str) -> None:
    for container_id in container_ids:
        await v2.runtime.remove(container_id)
    await v2.runtime.close()


def test_container_usage_comes_from_its_cgroup_v2_files(v2: V2) -> None:
    async def scenario() -> None:
        try:
            status = await v2.runtime.start(v2.spec("busy", BUSY))
            dirs = container_dirs(status.pid)
            # Its cgroup is the v2 one crun made; the v1 hierarchies it shares with the daemon are ignored.
            assert dirs.get(_V2) == v2.v2_dir("ee", "busy"), dirs
            assert not {"memory", "cpuacct", "pids"} & set(dirs), dirs
            log = v2.tmp / "logs" / "busy.log"
            deadline = time.monotonic() + 20
            while b"busy done" not in (log.read_bytes() if log.exists() else b"") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            usage = v2.runtime.usage_now("busy")
            procs = tuple(sorted(int(pid) for pid in (dirs[_V2] / "cgroup.procs").read_text().split()))
            assert usage.pids == procs and status.pid in procs
            cpu_usec = next(int(line.split()[1]) for line in (dirs[_V2] / "cpu.stat").read_text().splitlines()
                            if line.startswith("usage_usec"))  # fmt: skip
            assert cpu_usec > 0  # the busy loop ran in this cgroup
            assert usage.cpu_percent >= 0  # from cpu.stat: -1 would mean no CPU figure was found
            assert usage.memory_kib > 0
        finally:
            await _stop_all(v2, "busy")

    asyncio.run(scenario())


@pytest.mark.skipif(HAS_V2_LIMITS, reason="the v2 hierarchy has the controllers: the limits apply (next tests)")
def test_a_limit_cgroup_v2_cannot_enforce_fails_the_start_with_the_reason(v2: V2) -> None:
    async def scenario() -> None:
        try:
            with pytest.raises(Fault) as caught:
                await v2.runtime.start(v2.spec("limited", BUSY, ee=Limits(memory_kib=65536)))
            assert caught.value.code == FaultCode.SYSTEM_RESOURCES_EXCEEDED
            assert "no memory controller" in caught.value.message, caught.value.message
            assert not v2.exits and await v2.runtime.list_ids() == []
        finally:
            await _stop_all(v2)

    asyncio.run(scenario())


@pytest.mark.skipif(not HAS_V2_LIMITS, reason=NO_V2_LIMITS)
def test_execenv_parent_and_eu_limits_in_cgroup_v2(v2: V2) -> None:
    async def scenario() -> None:
        try:
            spec = v2.spec("capped", BUSY, eu=Limits(memory_kib=32768, cpu_percent=50),
                           ee=Limits(memory_kib=262144, cpu_percent=100))  # fmt: skip
            await v2.runtime.start(spec)
            parent = v2.v2_dir("ee")
            assert (parent / "memory.max").read_text().strip() == str(262144 * 1024)
            quota = execenv_resources(Limits(cpu_percent=100), 2)["cpu"]["quota"]
            assert (parent / "cpu.max").read_text().split()[0] == str(quota)
            assert {"memory", "cpu"} <= set((parent / "cgroup.subtree_control").read_text().split())
            assert (parent / "capped" / "memory.max").read_text().strip() == str(32768 * 1024)
            assert (parent / "capped" / "cpu.max").read_text().split()[0] != "max"
        finally:
            await _stop_all(v2, "capped")

    asyncio.run(scenario())


@pytest.mark.skipif(not HAS_V2_LIMITS, reason=NO_V2_LIMITS)
def test_an_oom_kill_is_read_from_memory_events(v2: V2) -> None:
    async def scenario() -> None:
        try:
            await v2.runtime.start(v2.spec("hog", HOG, eu=Limits(memory_kib=16384)))
            deadline = time.monotonic() + 30
            while not v2.exits and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert v2.exits and v2.exits[0].oom_killed, v2.exits
        finally:
            await _stop_all(v2, "hog")

    asyncio.run(scenario())
