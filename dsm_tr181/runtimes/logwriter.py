"""Starting a container's log writer (:mod:`.logshim`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dsm_tr181.runtimes import logshim
from dsm_tr181.runtimes.logrotate import LogPolicy, open_log

SHIM = Path(logshim.__file__)


def pipe(policy: LogPolicy) -> tuple[int, int]:
    """The log file rotated if due and there at once, and the pipe to its writer: (read
    end for :func:`spawn`, write end for the container)."""
    os.close(open_log(policy))
    return os.pipe2(os.O_CLOEXEC)


def spawn(policy: LogPolicy, read_end: int) -> int:
    """Start the writer of ``policy.path`` reading ``read_end`` (closed here); its pid.

    The container may already write: the pipe holds its output until the writer runs."""
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", "-I", str(SHIM), str(policy.path), str(policy.max_bytes), str(policy.backups)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    return process.pid
