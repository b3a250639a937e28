"""Unpack while downloading: the download runs in a thread of its own and feeds extraction through a pipe.

Only for archives with no digest expected (:mod:`~dsm_tr181.packagers.fetch`
decides): an expected digest is checked before anything is unpacked.

A pipe, as in ``curl | tar``: no copy of the archive is kept on disk, so an install
needs room for the unpacked bundle only; the kernel bounds what is in flight (1 MiB);
and each side learns that the other has ended without any further signalling:
extraction reads end-of-file once the download has ended, complete or not, and
the download fails at its next write once extraction has closed its end.

Whichever side fails first gives the fault. A failed download (truncated body,
stalled server, size limit, cancellation) closes the pipe, so extraction fails too
(a truncated archive), and the download's own fault is reported. When extraction
fails first (corrupt archive, limits, disk full), it closes its end and aborts the
connection, so the download stops at once and what it then runs into is dropped.
The bundle may be published only after :meth:`Feed.complete`: the whole archive
received and hashed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from dsm_tr181.errors import Fault, FaultCode

_PIPE_BYTES = 1 << 20


class Feed:
    """A running download and the read end of its pipe (see the module docstring)."""

    def __init__(self, download: Callable[[BinaryIO], str], abort: Callable[[], None]) -> None:
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            raise Fault(FaultCode.INTERNAL_ERROR, f"cannot create a pipe ({exc.strerror})") from None
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default 64 KiB
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.file: BinaryIO = os.fdopen(read_fd, "rb", buffering=0)  # extraction buffers its reads itself
        self._sink: BinaryIO = os.fdopen(write_fd, "wb")
        self._download = download
        self._abort = abort
        self._abandoned = threading.Event()
        self._digest = ""
        self._fault: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dsm-download", daemon=True)
        self._thread.start()

    def complete(self) -> str:
        """Wait for the download's end (extraction has read the pipe to its end); its hex sha256, or its fault."""
        self._thread.join()
        if self._fault is not None:
            raise self._fault
        return self._digest

    def stop(self) -> BaseException | None:
        """End the download if it still runs; return the fault it had before that, if any."""
        if self._thread.is_alive():
            self._abandoned.set()
            self.file.close()  # its next write fails
            self._abort()  # and a read from the server returns at once
            self._thread.join()
        self.file.close()
        return self._fault

    def _run(self) -> None:
        try:
            self._digest = self._download(self._sink)
        except BaseException as exc:  # handed over to the extracting thread
            # Recorded before the pipe closes: extraction must not see the end of data first.
            if not self._abandoned.is_set():
                self._fault = exc
        finally:
            with contextlib.suppress(OSError):  # EPIPE: extraction no longer wants the rest
                self._sink.close()


@contextmanager
def feed(download: Callable[[BinaryIO], str], abort: Callable[[], None]) -> Iterator[Feed]:
    """Run ``download(pipe)`` in a thread; the block reads the pipe (``Feed.file``).

    ``download`` writes the archive to the pipe and returns its hex sha256; ``abort``
    makes it stop soon from another thread. Leaving the block always ends the
    download; an exception leaving it is replaced by the download's own earlier fault.
    """
    fed = Feed(download, abort)
    try:
        yield fed
    except BaseException:
        fault = fed.stop()
        if fault is not None:
            raise fault from None
        raise
    finally:
        fed.stop()
