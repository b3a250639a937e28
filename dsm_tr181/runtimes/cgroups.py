"""Resource usage of a container, read from its cgroups (v1, v2 or hybrid) or /proc.

The container's cgroup directories are found from ``/proc/<init>/cgroup`` and the
daemon's mount table. A hierarchy in which the init sits in the same cgroup as the
daemon does not belong to the container (crun inside a private cgroup2 namespace
leaves the v1 controllers alone, for instance) and is ignored. Without a memory
controller of its own, memory is the sum of the processes' VmRSS; without CPU
accounting, CPU time is unknown.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

_V2 = ""  # key of the unified hierarchy in the maps below
_PROCS_SOURCES = (_V2, "pids", "memory", "cpuacct", "freezer")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class UsageSample:
    memory_kib: int  # -1 when unknown
    cpu_usec: int | None  # CPU time used since the container started
    age_s: float | None  # seconds since its init process started
    pids: tuple[int, ...]


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:  # no text layer: these files are small and ASCII
            return file.read().decode()
    except (OSError, ValueError):
        return None


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@functools.cache
def _cgroup_mounts() -> dict[str, tuple[str, Path]]:
    """Controller (or _V2) -> (root of the hierarchy visible there, mount point).

    Read once: the daemon's own mount table does not change under it (runtimes that
    need another one run in a mount namespace of their own)."""
    mounts: dict[str, tuple[str, Path]] = {}
    for line in (_read(Path("/proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        try:
            fstype, super_options = fields[fields.index("-") + 1], fields[fields.index("-") + 3]
        except (ValueError, IndexError):
            continue
        root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2":
            mounts.setdefault(_V2, (root, mount_point))
        elif fstype == "cgroup":
            for option in super_options.split(","):
                mounts.setdefault(option, (root, mount_point))
    return mounts


def _membership(pid: str) -> dict[str, str]:
    """Controller (or _V2) -> cgroup path of ``pid``, from /proc/<pid>/cgroup."""
    paths: dict[str, str] = {}
    for line in (_read(Path(f"/proc/{pid}/cgroup")) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [_V2]:
            paths[controller] = path
    return paths


def _container_dirs(pid: int) -> dict[str, Path]:
    """The cgroup directories that hold ``pid`` and not the daemon, by controller."""
    mounts, own, theirs = _cgroup_mounts(), _membership("self"), _membership(str(pid))
    dirs: dict[str, Path] = {}
    for controller, path in theirs.items():
        if controller not in mounts or own.get(controller) == path:
            continue
        root, mount_point = mounts[controller]
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue  # outside what this mount shows
        relative = path[len(root) :] if root != "/" else path
        dirs[controller] = mount_point / relative.lstrip("/")
    return dirs


def _stat_value(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a ``name value`` per line file (memory.stat, cpu.stat)."""
    if not text:
        return None
    if text.startswith(key + " "):
        start = 0
    else:
        found = text.find("\n" + key + " ")
        if found < 0:
            return None
        start = found + 1
    value = text[start + len(key) + 1 :].split("\n", 1)[0].strip()
    return int(value) if value.isdigit() else None


def _memory_bytes(dirs: dict[str, Path]) -> int | None:
    """Working set (usage minus inactive file cache) of a memory cgroup of the container."""
    if "memory" in dirs:  # v1
        usage = _read(dirs["memory"] / "memory.usage_in_bytes")
        inactive = _stat_value(_read(dirs["memory"] / "memory.stat"), "total_inactive_file")
    elif _V2 in dirs:
        usage = _read(dirs[_V2] / "memory.current")
        inactive = _stat_value(_read(dirs[_V2] / "memory.stat"), "inactive_file")
    else:
        return None
    if usage is None or not usage.strip().isdigit():
        return None
    return max(0, int(usage) - (inactive or 0))


def _cpu_usec(dirs: dict[str, Path]) -> int | None:
    if "cpuacct" in dirs:
        usage = _read(dirs["cpuacct"] / "cpuacct.usage")  # nanoseconds
        return int(usage) // 1000 if usage and usage.strip().isdigit() else None
    if _V2 in dirs:
        return _stat_value(_read(dirs[_V2] / "cpu.stat"), "usage_usec")
    return None


def _pids(dirs: dict[str, Path], init: int) -> tuple[int, ...]:
    for controller in _PROCS_SOURCES:
        if controller in dirs:
            text = _read(dirs[controller] / "cgroup.procs")
            if text is not None:
                return tuple(sorted(int(pid) for pid in text.split()))
    if any(controller in dirs for controller in _PROCS_SOURCES):
        return ()  # its cgroups are gone: so is the container
    return (init,) if Path(f"/proc/{init}").exists() else ()


def _rss_kib(pids: tuple[int, ...]) -> int:
    total = 0
    for pid in pids:
        for line in (_read(Path(f"/proc/{pid}/status")) or "").splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _age_s(pid: int) -> float | None:
    stat, uptime = _read(Path(f"/proc/{pid}/stat")), _read(Path("/proc/uptime"))
    if stat is None or uptime is None:
        return None
    # Field 22 (starttime, in clock ticks since boot) counted after the ")" closing comm.
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return max(0.0, float(uptime.split()[0]) - start_ticks / _CLOCK_TICKS)


def container_dirs(init: int) -> dict[str, Path]:
    """The cgroup directories of the container whose init process is ``init``, by controller
    (they stay the same while it runs: find them once, sample them often)."""
    return _container_dirs(init)


def sample_usage(init: int, dirs: dict[str, Path] | None = None, with_age: bool = True) -> UsageSample:
    """Memory, CPU time and pids of the container whose init process is ``init`` (a few file
    reads, no process). ``dirs``: its :func:`container_dirs` if known; ``with_age``: also
    read how long the init has run (needed for a first CPU share only)."""
    if dirs is None:
        dirs = _container_dirs(init)
    pids = _pids(dirs, init)
    if not pids:
        return UsageSample(-1, None, None, ())
    memory = _memory_bytes(dirs)
    return UsageSample(
        memory_kib=memory // 1024 if memory is not None else _rss_kib(pids),
        cpu_usec=_cpu_usec(dirs),
        age_s=_age_s(init) if with_age else None,
        pids=pids,
    )
