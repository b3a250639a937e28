"""Admission against an ExecEnv's allocations.

* Disk, at install and update: the unpacked DU plus the other DUs of its ExecEnv must fit
  the ExecEnv's ``AllocatedDiskSpace``, and the DU alone its EU's
  ``Resources.AllocatedDiskSpace``; otherwise 7227 (the operation leaves nothing).
* Memory, at start: the memory limits of the ExecEnv's running EUs plus the starting EU's
  must fit the ExecEnv's ``AllocatedMemory``, otherwise the start fails (``FailureOnStart``
  with a message). An EU without a limit of its own reserves nothing here; its ExecEnv's
  parent cgroup bounds it all the same.
* Without a parent cgroup (a runtime whose ``parent_cgroup`` is false: Dobby, which puts
  each container in a cgroup of its own named after it, and runc with ``systemd_cgroup``),
  the ExecEnv's ``AllocatedMemory`` and ``AllocatedCPUPercent`` hold by admission instead
  (:func:`share_out`): at start an EU's memory limit and CPU quota are lowered to what the
  ExecEnv's running EUs leave of its allocation, so their sum never exceeds it; an EU whose
  own ``Resources.*`` input asks for more than is left, or that would get nothing, fails to
  start with a message.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dsm_tr181.containerspec.resources import (
    MIN_QUOTA_US,
    Limits,
    cpu_quota_us,
    execenv_quota_us,
    lowered,
    memory_limit_kib,
)
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import euinputs
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecutionUnitRecord

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm


def check_disk(lcm: Lcm, du: DeploymentUnitRecord, eus: list[ExecutionUnitRecord], disk_kib: int) -> None:
    """Fault 7227 if ``disk_kib`` more for ``du`` exceeds an allocation."""
    settings = lcm.execenvs.settings.get(du.ee)
    allocated = settings.allocated_disk_kib if settings is not None else -1
    if allocated >= 0:
        others = sum(
            d.disk_kib for d in lcm.deployments.records.values() if d.ee == du.ee and d.instance != du.instance
        )
        if others + disk_kib > allocated:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"the deployment unit needs {disk_kib} KiB; execution environment {du.ee!r} has "
                f"{max(0, allocated - others)} KiB of its {allocated} KiB allocation left",
            )
    for eu in eus:
        own = euinputs.limits_of(eu).disk_kib
        if own >= 0 and disk_kib > own:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"the deployment unit needs {disk_kib} KiB, more than Resources.AllocatedDiskSpace {own} KiB",
            )


def memory_refusal(lcm: Lcm, eu: ExecutionUnitRecord, spec: dict[str, Any]) -> str:
    """Why starting ``eu`` with ``spec`` would exceed its ExecEnv's memory ("" if it fits)."""
    settings = lcm.execenvs.settings.get(eu.ee)
    allocated = settings.allocated_memory_kib if settings is not None else -1
    wanted = memory_limit_kib(spec)
    if allocated < 0 or wanted < 0:
        return ""
    reserved = sum(
        max(0, unit.memory_limit_kib)
        for unit in lcm.executions.of_ee(eu.ee)
        if unit.running and unit.record.instance != eu.instance
    )
    if reserved + wanted <= allocated:
        return ""
    return (
        f"memory allocation exceeded: the execution unit's limit is {wanted} KiB, execution environment "
        f"{eu.ee!r} has {max(0, allocated - reserved)} KiB of its {allocated} KiB left"
    )


def share_out(lcm: Lcm, eu: ExecutionUnitRecord, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``spec`` with its memory limit and CPU quota lowered to what the ExecEnv's other running
    EUs leave of its allocation, and why it cannot start ("" when it can)."""
    settings = lcm.execenvs.settings.get(eu.ee)
    if settings is None:
        return spec, ""
    own = euinputs.limits_of(eu)
    others = [u for u in lcm.executions.of_ee(eu.ee) if u.running and u.record.instance != eu.instance]
    memory_left = quota_left = -1
    if settings.allocated_memory_kib >= 0:
        memory_left = settings.allocated_memory_kib - sum(max(0, u.memory_limit_kib) for u in others)
        wanted = memory_limit_kib(spec)
        if memory_left <= 0 or (own.memory_kib >= 0 and wanted > memory_left):
            return spec, (
                f"memory allocation exceeded: execution environment {eu.ee!r} has {max(0, memory_left)} KiB "
                f"of its {settings.allocated_memory_kib} KiB left"
                + (f", the execution unit's limit is {wanted} KiB" if own.memory_kib >= 0 else "")
            )
    ee_quota = execenv_quota_us(Limits(cpu_percent=settings.allocated_cpu_percent), os.cpu_count() or 1)
    if ee_quota >= 0:
        quota_left = ee_quota - sum(max(0, u.cpu_quota_us) for u in others)
        wanted = cpu_quota_us(spec)
        if quota_left < MIN_QUOTA_US or (own.cpu_percent >= 0 and wanted > quota_left):
            return spec, (
                f"CPU allocation exceeded: execution environment {eu.ee!r} has {max(0, quota_left)} us "
                f"of its {ee_quota} us CFS quota per 100 ms left"
            )
    return lowered(spec, memory_left, quota_left), ""
