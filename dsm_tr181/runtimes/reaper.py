"""Exit detection for container init processes: child subreaper plus one pidfd each.

``runc run --detach`` / ``crun run --detach`` exit once the container runs, which orphans the
container's init. As a child subreaper the daemon adopts it, so its exit status can be
collected. A pidfd per init wakes the loop when it exits (no polling, no SIGCHLD), and
``waitid(P_PIDFD)`` reaps exactly that process.

asyncio reaps the runtime CLI processes itself. Python 3.11's default child watcher
(ThreadedChildWatcher) calls ``waitpid(pid)`` for each of its own children only, and
this module reaps only the pids it was asked to watch, so the two never take each
other's exit statuses. A watcher that calls ``waitpid(-1)`` (asyncio's
FastChildWatcher) would steal them and must not be installed.

A process that is not our child (a container adopted after a daemon restart) still
makes its pidfd readable when it exits, but its status belongs to its real parent:
it is reported as unknown.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def become_subreaper() -> None:
    """Make orphaned descendants of this process its children (process-wide, idempotent)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


@dataclass(frozen=True)
class ExitStatus:
    exit_status: int | None  # the exit code; None when killed by a signal or unknown
    signal: int | None = None


ExitHandler = Callable[[ExitStatus], None]


def _decode(info: os.waitid_result | None) -> ExitStatus:
    if info is None:
        return ExitStatus(None)
    if info.si_code == os.CLD_EXITED:
        return ExitStatus(info.si_status)
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return ExitStatus(None, info.si_status)
    return ExitStatus(None)


class ExitWatcher:
    """Calls a handler on the loop when a watched process exits, reaping it if it is our child."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pidfds: dict[int, int] = {}

    def watch(self, pid: int, handler: ExitHandler) -> None:
        """Watch ``pid``; ProcessLookupError if it no longer exists."""
        if pid in self._pidfds:
            raise ValueError(f"pid {pid} is already watched")
        pidfd = os.pidfd_open(pid)
        self._pidfds[pid] = pidfd
        self._loop.add_reader(pidfd, self._exited, pid, pidfd, handler)

    def forget(self, pid: int) -> None:
        """Stop watching ``pid`` (the process is left alone)."""
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def close(self) -> None:
        for pid in list(self._pidfds):
            self.forget(pid)

    def _exited(self, pid: int, pidfd: int, handler: ExitHandler) -> None:
        del self._pidfds[pid]
        self._loop.remove_reader(pidfd)
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # not our child: the status went to its parent
            info = None
        finally:
            os.close(pidfd)
        handler(_decode(info))
