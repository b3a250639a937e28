"""Starting a container's log writer (:mod:`.logshim`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dsm_tr181.runtimes import logshim
from dsm_tr181.runtimes.logrotate import LogPolicy, open_log

SHIM = Path(logshim.__file__)


def spawn(policy: LogPolicy) -> tuple[int, int]:
    """Start the writer of ``policy.path``; (the pipe's write end to give the container, its pid)."""
    os.close(open_log(policy))  # rotated if due and there at once, before the writer runs
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", "-I", str(SHIM), str(policy.path), str(policy.max_bytes), str(policy.backups)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end, process.pid
