"""Size-bounded copy-truncate rotation of container log files.

The container holds its log open with O_APPEND (the daemon is not in the path, so the
container keeps logging while the daemon restarts); the file therefore cannot be
renamed away. Rotation copies the newest ``max_bytes`` into ``LOG.1`` (shifting older
backups up to ``LOG.<backups>``) and truncates the live file; the writer's next
append lands at offset 0. Lines written between the copy and the truncation are lost,
as with logrotate's copytruncate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LogPolicy:
    path: Path
    max_bytes: int  # 0: never rotate
    backups: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_bytes": self.max_bytes, "backups": self.backups}

    @classmethod
    def from_dict(cls, data: Any) -> LogPolicy:
        if not isinstance(data, dict):
            raise ValueError("log policy must be a JSON object")
        path, max_bytes, backups = data.get("path"), data.get("max_bytes"), data.get("backups")
        if not isinstance(path, str) or not isinstance(max_bytes, int) or not isinstance(backups, int):
            raise ValueError(f"malformed log policy {data!r}")
        return cls(Path(path), max_bytes, backups)


def backup_path(log: Path, index: int) -> Path:
    return log.with_name(f"{log.name}.{index}")


def shift_backups(log: Path, backups: int) -> None:
    """Move ``LOG.1`` … ``LOG.<backups-1>`` up by one, making room for a new ``LOG.1``."""
    for index in range(backups - 1, 0, -1):
        older = backup_path(log, index)
        if older.exists():
            os.replace(older, backup_path(log, index + 1))


def open_log(policy: LogPolicy) -> int:
    """Rotate if due, then open the log for appending; the fd to hand to the container."""
    policy.path.parent.mkdir(parents=True, exist_ok=True)
    rotate_if_needed(policy)
    return os.open(policy.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def rotate_if_needed(policy: LogPolicy) -> bool:
    """Rotate ``policy.path`` if it exceeds ``max_bytes``; whether it did."""
    try:
        size = policy.path.stat().st_size
    except FileNotFoundError:
        return False
    if policy.max_bytes <= 0 or size <= policy.max_bytes:
        return False
    if policy.backups > 0:
        shift_backups(policy.path, policy.backups)
        with policy.path.open("rb") as live:
            live.seek(size - policy.max_bytes - 1)
            chunk = live.read(policy.max_bytes + 1)
        tail = chunk[1:]
        if chunk[:1] != b"\n":  # the cut fell inside a line: keep whole lines only
            newline = tail.find(b"\n")
            if 0 <= newline < len(tail) - 1:
                tail = tail[newline + 1 :]
        staging = policy.path.with_name(f"{policy.path.name}.rotating")
        staging.write_bytes(tail)
        os.replace(staging, backup_path(policy.path, 1))
    os.truncate(policy.path, 0)
    return True
