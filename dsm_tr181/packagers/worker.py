"""What the packager's blocking worker thread shares: cancellation, disk faults, removal."""

from __future__ import annotations

import asyncio
import errno
import mmap
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Cancel:
    """Set by the event loop when the caller gave up; checked by the worker between chunks.

    A wait that no check can interrupt (a read from a stalled server) registers a
    :meth:`hook` that ends it; hooks run in the thread that cancels.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            for hook in self._hooks:
                hook()

    def check(self, where: str) -> None:
        if self._event.is_set():
            raise Fault(FaultCode.COMMAND_CANCELED, f"{where}: cancelled")

    @contextmanager
    def hook(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback`` on cancellation inside the block, and never once the block is left."""
        with self._lock:
            self._hooks.append(callback)
        try:
            yield
        finally:
            with self._lock:
                self._hooks.remove(callback)


async def unpack_in_thread(
    work: Callable[[Cancel], BundleInfo], discard: Callable[[Path], Awaitable[None]]
) -> BundleInfo:
    """Run a packager's blocking ``work`` in a thread. When the caller gives up, the worker
    is told (:class:`Cancel`) and waited for, and a bundle it completed meanwhile is
    ``discard``-ed: a cancelled unpack leaves nothing."""
    cancel = Cancel()
    task = asyncio.ensure_future(asyncio.to_thread(work, cancel))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        [outcome] = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, BundleInfo):
            await discard(outcome.path)
        raise


def scratch(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes for the packager's threads. Anonymous memory: its pages
    come on first use, inside the read that fills them, with the GIL released; ``bytearray(size)``
    would fault them in while it zeroes them, holding the GIL (1.5 ms of each local install)."""
    return memoryview(mmap.mmap(-1, size))


def disk_fault(exc: OSError, where: str) -> Fault:
    """The fault for a failed local write: out of space is the device's limit, the rest is ours."""
    if exc.errno in _NO_SPACE:
        return Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"{where}: no space left ({exc.strerror})")
    return Fault(FaultCode.INTERNAL_ERROR, f"{where}: {exc.strerror or exc}")


def remove_tree(path: Path) -> None:
    """Delete ``path`` (a directory tree, or a symlink itself); absent is fine."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise disk_fault(exc, f"cannot remove {path}") from exc


def make_staging(parent: Path) -> Path:
    """A new private directory ``parent/.staging-<random>`` on the target's filesystem."""
    try:
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    except OSError as exc:
        raise disk_fault(exc, f"cannot create a staging directory in {parent}") from exc
