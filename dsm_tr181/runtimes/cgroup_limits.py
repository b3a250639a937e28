"""An ExecEnv's parent cgroup and the OOM-kill count of a container's cgroup.

Every EU's cgroup is ``/<instance>/<execenv>/<container>`` (the spec's ``cgroupsPath``);
the ExecEnv's ``Allocated*`` limits are written into ``/<instance>/<execenv>`` before a
container is created there, so the kernel bounds all of the ExecEnv's EUs together:

* cgroup v1 (runc on a hybrid or legacy host): ``memory.limit_in_bytes`` in the memory
  hierarchy, ``cpu.cfs_period_us``/``cpu.cfs_quota_us`` in the cpu hierarchy;
* cgroup v2: ``memory.max`` and ``cpu.max``, where the unified hierarchy has those
  controllers (on a hybrid host they are bound to v1 and the v2 tree has none), each
  level from the hierarchy's root down to the parent delegating them
  (``cgroup.subtree_control``). A runtime that sees cgroup v2 only (crun in a private
  cgroup2 mount namespace, see ``cgroup2_mount_namespace``) gets its parent there alone.

A limit that cannot be enforced (its controller is in no hierarchy the runtime uses) is
a Fault, not a silent no-op.

Limits are rewritten at every start, so a changed configuration applies to the next start;
an absent limit is written as "unlimited".
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.runtimes.cgroups import _V2, _cgroup_mounts


def _hierarchy(controller: str, cgroup_path: str, mounts: dict[str, tuple[str, Path]]) -> Path | None:
    """The directory of ``cgroup_path`` in the hierarchy of ``controller`` (None: not mounted here)."""
    if controller not in mounts:
        return None
    root, mount_point = mounts[controller]
    if root != "/":
        if not (cgroup_path == root or cgroup_path.startswith(root + "/")):
            return None
        cgroup_path = cgroup_path[len(root) :]
    return mount_point / cgroup_path.lstrip("/")


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise Fault(
            FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"cannot set {path.name} of cgroup {path.parent} to {value}: {exc}"
        ) from None


def apply_parent(
    container_cgroup: str,
    resources: Mapping[str, Any],
    *,
    unified: bool = False,
    mounts: dict[str, tuple[str, Path]] | None = None,
) -> list[Path]:
    """Create the parent cgroup of ``container_cgroup`` and give it ``resources`` (OCI
    linux.resources memory/cpu); the files written. ``unified``: the runtime uses the
    cgroup v2 hierarchy only. ``mounts``: the cgroup mount table (default: this process's)."""
    parent = posixpath.dirname(container_cgroup.rstrip("/"))
    if not parent.startswith("/") or parent == "/":
        return []
    mounts = _cgroup_mounts() if mounts is None else mounts
    memory = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    limit = memory.get("limit")
    quota, period = cpu.get("quota"), int(cpu.get("period") or 100_000)
    if unified:
        unified_dir = _hierarchy(_V2, parent, mounts)
        if unified_dir is None:
            if limit or quota:
                raise Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, "no cgroup v2 hierarchy to hold the limits")
            return []
        return _apply_v2(unified_dir, mounts[_V2][1], limit, quota, period, True, True)
    written: list[Path] = []
    memory_dir = _hierarchy("memory", parent, mounts)
    if memory_dir is not None:
        memory_dir.mkdir(parents=True, exist_ok=True)
        _write(memory_dir / "memory.limit_in_bytes", str(limit) if limit else "-1")
        written.append(memory_dir / "memory.limit_in_bytes")
    cpu_dir = _hierarchy("cpu", parent, mounts)
    if cpu_dir is not None:
        cpu_dir.mkdir(parents=True, exist_ok=True)
        _write(cpu_dir / "cpu.cfs_period_us", str(period))
        _write(cpu_dir / "cpu.cfs_quota_us", str(quota) if quota else "-1")
        written += [cpu_dir / "cpu.cfs_period_us", cpu_dir / "cpu.cfs_quota_us"]
    v2_dir = _hierarchy(_V2, parent, mounts)
    if v2_dir is not None and (memory_dir is None or cpu_dir is None):
        written += _apply_v2(v2_dir, mounts[_V2][1], limit, quota, period, memory_dir is None, cpu_dir is None)
    return written


def _apply_v2(
    directory: Path, mount_point: Path, limit: Any, quota: Any, period: int, want_memory: bool, want_cpu: bool
) -> list[Path]:
    available = set((_read(mount_point / "cgroup.controllers") or "").split())
    for controller, asked, value in (("memory", want_memory, limit), ("cpu", want_cpu, quota)):
        if asked and value and controller not in available:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"cannot enforce the {controller} limit: the cgroup v2 hierarchy at {mount_point} has no "
                f"{controller} controller (it is bound to cgroup v1 on this host)",
            )
    wanted = [c for c, asked in (("memory", want_memory), ("cpu", want_cpu)) if asked and c in available]
    if not wanted:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    # Each level from the mount point down to the parent itself delegates the controllers
    # (the parent to the containers below it).
    parts = directory.relative_to(mount_point).parts
    for depth in range(len(parts) + 1):
        _write(mount_point.joinpath(*parts[:depth]) / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    written = []
    if "memory" in wanted:
        _write(directory / "memory.max", str(limit) if limit else "max")
        written.append(directory / "memory.max")
    if "cpu" in wanted:
        _write(directory / "cpu.max", f"{quota if quota else 'max'} {period}")
        written.append(directory / "cpu.max")
    return written


def oom_kills(
    container_cgroup: str, *, unified: bool = False, mounts: dict[str, tuple[str, Path]] | None = None
) -> int:
    """Processes of the container's cgroup the OOM killer killed (0 when unknown): v1's
    ``memory.oom_control`` where the container has a v1 memory cgroup, else v2's
    ``memory.events``. ``unified``/``mounts`` as for :func:`apply_parent`."""
    mounts = _cgroup_mounts() if mounts is None else mounts
    v1 = None if unified else _hierarchy("memory", container_cgroup, mounts)
    if v1 is not None and v1.is_dir():
        return _counter(_read(v1 / "memory.oom_control"), "oom_kill")
    v2 = _hierarchy(_V2, container_cgroup, mounts)
    if v2 is not None:
        return _counter(_read(v2 / "memory.events"), "oom_kill")
    return 0


def _counter(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
