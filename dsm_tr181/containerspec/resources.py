"""Resource limits in OCI terms: an EU's own (``linux.resources``) and its ExecEnv's.

An ExecEnv's ``Allocated*`` settings become the limits of its parent cgroup
(``/<instance>/<execenv>``), which every EU's cgroup sits under; an EU's ``Resources.*``
inputs and its bundle's ``linux.resources`` become the limits of its own cgroup, never
above the ExecEnv's:

* memory: ``AllocatedMemory`` KiB → ``memory.limit`` bytes. An EU input above the
  ExecEnv's allocation is refused (7227); a bundle's own larger limit is lowered to it.
* CPU: ``AllocatedCPUPercent`` of an ExecEnv is a share of the whole device (all CPUs);
  an EU's is, as TR-181 says, a share of its ExecEnv's allocation (of the device when the
  ExecEnv has none). Either becomes a CFS quota over a 100 ms period.
* disk: checked at install (see :mod:`dsm_tr181.lcm.admission`), no cgroup part.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsm_tr181.errors import Fault, FaultCode

CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses CFS quotas below 1 ms


@dataclass(frozen=True)
class Limits:
    """TR-181 ``Allocated*`` figures; -1 means no limit."""

    memory_kib: int = -1
    cpu_percent: int = -1
    disk_kib: int = -1

    def __post_init__(self) -> None:
        for name in ("memory_kib", "cpu_percent", "disk_kib"):
            if getattr(self, name) < -1:
                raise ValueError(f"{name} must be -1 (no limit) or >= 0")
        if self.cpu_percent > 100:
            raise ValueError("cpu_percent must be -1..100")


def execenv_quota_us(ee: Limits, cpus: int) -> int:
    """The CFS quota (per CPU_PERIOD_US) of the ExecEnv's cgroup; -1 for none."""
    if ee.cpu_percent < 0:
        return -1
    return max(MIN_QUOTA_US, round(ee.cpu_percent / 100 * cpus * CPU_PERIOD_US))


def eu_quota_us(ee: Limits, eu: Limits, cpus: int) -> int:
    """The CFS quota an EU's own ``AllocatedCPUPercent`` gives it: a share of its ExecEnv's
    CPUs (of the whole device when the ExecEnv has no allocation); -1 for none."""
    if eu.cpu_percent < 0:
        return -1
    ee_cpus = ee.cpu_percent / 100 * cpus if ee.cpu_percent >= 0 else float(cpus)
    return max(MIN_QUOTA_US, round(ee_cpus * eu.cpu_percent / 100 * CPU_PERIOD_US))


def execenv_resources(ee: Limits, cpus: int) -> dict[str, Any]:
    """``linux.resources`` of the ExecEnv's parent cgroup ({} when it has no allocation)."""
    resources: dict[str, Any] = {}
    if ee.memory_kib >= 0:
        resources["memory"] = {"limit": ee.memory_kib * 1024}
    if ee.cpu_percent >= 0:
        resources["cpu"] = {"quota": execenv_quota_us(ee, cpus), "period": CPU_PERIOD_US}
    return resources


def eu_resources(bundle: Any, ee: Limits, eu: Limits, cpus: int, execenv: str) -> dict[str, Any]:
    """The EU's ``linux.resources``: the bundle's (devices aside, decided elsewhere) with the
    memory and CPU limits it may have. Fault when an input asks more than the ExecEnv has."""
    resources = copy.deepcopy(dict(bundle)) if isinstance(bundle, Mapping) else {}
    if ee.memory_kib >= 0 and eu.memory_kib > ee.memory_kib:
        raise Fault(
            FaultCode.SYSTEM_RESOURCES_EXCEEDED,
            f"Resources.AllocatedMemory {eu.memory_kib} KiB exceeds execution environment {execenv!r}'s "
            f"allocation of {ee.memory_kib} KiB",
        )
    if ee.disk_kib >= 0 and eu.disk_kib > ee.disk_kib:
        raise Fault(
            FaultCode.SYSTEM_RESOURCES_EXCEEDED,
            f"Resources.AllocatedDiskSpace {eu.disk_kib} KiB exceeds execution environment {execenv!r}'s "
            f"allocation of {ee.disk_kib} KiB",
        )
    memory = dict(resources.get("memory") or {}) if isinstance(resources.get("memory"), Mapping) else {}
    limits = [memory["limit"]] if _positive(memory.get("limit")) else []
    limits += [kib * 1024 for kib in (eu.memory_kib, ee.memory_kib) if kib >= 0]
    if limits:
        memory["limit"] = min(limits)
        memory.pop("swap", None)  # swap accounting may be off; a larger swap limit would be refused
        resources["memory"] = memory
    cpu = dict(resources.get("cpu") or {}) if isinstance(resources.get("cpu"), Mapping) else {}
    quotas = [round(cpu["quota"] * CPU_PERIOD_US / cpu["period"])] if _cfs(cpu) else []
    quotas += [q for q in (eu_quota_us(ee, eu, cpus), execenv_quota_us(ee, cpus)) if q > 0]
    if quotas:
        cpu["quota"], cpu["period"] = max(MIN_QUOTA_US, min(quotas)), CPU_PERIOD_US
        resources["cpu"] = cpu
    return resources


def lowered(spec: Mapping[str, Any], memory_kib: int, quota_us: int) -> dict[str, Any]:
    """A copy of ``spec`` whose memory limit is at most ``memory_kib`` KiB and CFS quota at
    most ``quota_us`` per CPU_PERIOD_US (-1: that one unchanged)."""
    lowered_spec = copy.deepcopy(dict(spec))
    resources = lowered_spec.setdefault("linux", {}).setdefault("resources", {})
    if memory_kib >= 0 and not 0 < memory_limit_kib(spec) <= memory_kib:
        memory = resources.setdefault("memory", {})
        memory["limit"] = memory_kib * 1024
        memory.pop("swap", None)
    if quota_us >= 0 and not 0 < cpu_quota_us(spec) <= quota_us:
        resources["cpu"] = {**(resources.get("cpu") or {}), "quota": quota_us, "period": CPU_PERIOD_US}
    return lowered_spec


def cpu_quota_us(spec: Mapping[str, Any]) -> int:
    """The CFS quota a spec sets, per CPU_PERIOD_US; -1 for none."""
    cpu = ((spec.get("linux") or {}).get("resources") or {}).get("cpu") or {}
    return round(cpu["quota"] * CPU_PERIOD_US / cpu["period"]) if _cfs(cpu) else -1


def memory_limit_kib(spec: Mapping[str, Any]) -> int:
    """The memory limit a spec sets (KiB), -1 for none."""
    memory = ((spec.get("linux") or {}).get("resources") or {}).get("memory") or {}
    limit = memory.get("limit")
    return limit // 1024 if isinstance(limit, int) and _positive(limit) else -1


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _cfs(cpu: Mapping[str, Any]) -> bool:
    return _positive(cpu.get("quota")) and _positive(cpu.get("period"))
