"""Resource figures of the real system (disk, memory, CPU) for ExecEnv and EU parameters."""

from __future__ import annotations

import os
from pathlib import Path


def disk_available_kib(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize // 1024


def memory_available_kib() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class CpuIdle:
    """Percentage of CPU time left idle since the previous reading (/proc/stat)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    def percent(self) -> int:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] == last[1]:
            return -1
        return round(100 * (now[0] - last[0]) / (now[1] - last[1]))
