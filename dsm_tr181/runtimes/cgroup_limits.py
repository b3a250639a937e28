"""An ExecEnv's parent cgroup and the OOM-kill count of a container's cgroup.

Every EU's cgroup is ``/<instance>/<execenv>/<container>`` (the spec's ``cgroupsPath``);
the ExecEnv's ``Allocated*`` limits are written into ``/<instance>/<execenv>`` before a
container is created there, so the kernel bounds all of the ExecEnv's EUs together:

* cgroup v1 (runc on a hybrid or legacy host): ``memory.limit_in_bytes`` in the memory
  hierarchy, ``cpu.cfs_period_us``/``cpu.cfs_quota_us`` in the cpu hierarchy;
* cgroup v2: ``memory.max`` and ``cpu.max``, where the unified hierarchy has those
  controllers (on a hybrid host they are bound to v1 and the v2 tree has none).

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


def apply_parent(container_cgroup: str, resources: Mapping[str, Any]) -> list[Path]:
    """Create the parent cgroup of ``container_cgroup`` and give it ``resources`` (OCI
    linux.resources memory/cpu); the files written."""
    parent = posixpath.dirname(container_cgroup.rstrip("/"))
    if not parent.startswith("/") or parent == "/":
        return []
    mounts = _cgroup_mounts()
    memory = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    limit = memory.get("limit")
    quota, period = cpu.get("quota"), int(cpu.get("period") or 100_000)
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
    unified = _hierarchy(_V2, parent, mounts)
    if unified is not None and (memory_dir is None or cpu_dir is None):
        written += _apply_v2(unified, mounts[_V2][1], limit, quota, period, memory_dir is None, cpu_dir is None)
    return written


def _apply_v2(
    directory: Path, mount_point: Path, limit: Any, quota: Any, period: int, want_memory: bool, want_cpu: bool
) -> list[Path]:
    available = set((_read(mount_point / "cgroup.controllers") or "").split())
    wanted = [c for c, asked in (("memory", want_memory), ("cpu", want_cpu)) if asked and c in available]
    if not wanted:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    # Each level from the mount point down to the parent's parent delegates the controllers.
    level = mount_point
    for part in directory.relative_to(mount_point).parts:
        _write(level / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        level = level / part
    written = []
    if "memory" in wanted:
        _write(directory / "memory.max", str(limit) if limit else "max")
        written.append(directory / "memory.max")
    if "cpu" in wanted:
        _write(directory / "cpu.max", f"{quota if quota else 'max'} {period}")
        written.append(directory / "cpu.max")
    return written


def oom_kills(container_cgroup: str) -> int:
    """Processes of the container's cgroup the OOM killer killed (0 when unknown)."""
    mounts = _cgroup_mounts()
    v1 = _hierarchy("memory", container_cgroup, mounts)
    if v1 is not None:
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
