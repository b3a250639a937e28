"""Reading an EU's log (``LOG.<n>`` … ``LOG.1``, ``LOG``) in order, across rotations.

A cursor is ``{"inode", "offset"}`` of the file read last: rotation renames files (see
:mod:`.logshim`), so the file a cursor names is found again by its inode wherever it has
moved, and reading goes on to the next newer file when it is done. A cursor whose file has
left the backups starts again at the oldest file still there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsm_tr181.runtimes.logrotate import backup_path

CHUNK = 256 * 1024  # bytes per answer: well inside a control-socket frame


def _files(log: Path, backups: int) -> list[tuple[Path, int]]:
    """(path, inode) of the log's files, oldest first."""
    found = []
    for path in [*(backup_path(log, index) for index in range(backups, 0, -1)), log]:
        try:
            found.append((path, os.stat(path).st_ino))
        except FileNotFoundError:
            continue
    return found


def read_chunk(log: Path, backups: int, cursor: Mapping[str, Any] | None) -> dict[str, Any]:
    """Up to CHUNK bytes after ``cursor`` (None: from the oldest file's start):
    ``{"data", "cursor", "more"}`` — more is true while more is already written."""
    files = _files(log, backups)
    if not files:
        return {"data": "", "cursor": cursor, "more": False}
    index, offset = 0, 0
    if cursor:
        inodes = [inode for _, inode in files]
        if cursor.get("inode") in inodes:
            index, offset = inodes.index(cursor["inode"]), int(cursor.get("offset", 0))
    data = b""
    while True:
        path, inode = files[index]
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                offset = min(offset, size)  # truncated meanwhile
                handle.seek(offset)
                data += handle.read(CHUNK - len(data))
                offset = handle.tell()
        except FileNotFoundError:
            size = offset
        if len(data) >= CHUNK or offset < size or index == len(files) - 1:
            break
        index, offset = index + 1, 0
    more = offset < size or index < len(files) - 1
    return {"data": data.decode(errors="replace"), "cursor": {"inode": inode, "offset": offset}, "more": more}
