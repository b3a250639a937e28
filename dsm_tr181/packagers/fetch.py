"""Get a DU archive onto local disk, hashed and checked, without holding it in memory.

Sources: an absolute path, a ``file://`` URL (empty host or ``localhost``), or an
``http://``/``https://`` URL (see :mod:`dsm_tr181.packagers.httpget`). A URL with a
userinfo part is refused (TR-181: credentials go in Username/Password).

Local files are read once, in place: extraction reads them through
:class:`_HashingReader`, whose thread reads ahead and hashes what passes; the digest is checked when extraction
ends (``Fetched.complete``), before anything is published, so a file that does not match
leaves only a staging directory that is removed. A remote archive with a digest expected streams in chunks into an
unnamed temporary file (``O_TMPFILE``) in the download directory, hashed on the
way, so nothing is left behind however the process ends; it is handed to
extraction once complete and verified. A remote archive with no digest expected
is handed over while it downloads, through a pipe
(:mod:`~dsm_tr181.packagers.pipeline`), and still hashed on the way.

The expected digest is the caller's ``sha256:<hex>``; failing that, and when
``sibling_digest`` is on, the sibling ``<url>.sha256`` (``<path>.sha256``) is
fetched first: any 4xx answer (or a missing file) means there is none; a 5xx,
network or TLS failure fails the install, as then nobody can tell. URLs with a
query or fragment have no sibling. Digests are checked before anything is unpacked.

With a signature (:mod:`~dsm_tr181.packagers.signature`) the archive is never unpacked
while it downloads: it is hashed once on its way into the temporary file (local files: in
place), with the digest the signature names, and the signature is verified against that
digest before the archive is handed over. No second read.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import queue
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import PackageSource, ProgressCallback
from dsm_tr181.lcm.urls import display_url
from dsm_tr181.packagers import integrity, pipeline
from dsm_tr181.packagers.httpget import (
    BasicAuth,
    HttpOptions,
    Reply,
    open_url,
    split_url,
    status_fault,
)
from dsm_tr181.packagers.worker import Cancel, disk_fault, scratch

if TYPE_CHECKING:
    from dsm_tr181.signing.verify import Pending

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_AHEAD_CHUNK = 512 * 1024  # a local archive's read-ahead: this many bytes per read and hash,
_AHEAD = 4  # in this many buffers
_MAX_CHECKSUM_FILE = 4096


class _Readable(Protocol):
    def readinto1(self, buffer: memoryview, /) -> int: ...  # what is there, not waiting to fill the buffer


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class FetchOptions:
    http: HttpOptions
    max_archive_bytes: int
    sibling_digest: bool
    max_signature_bytes: int = 65536
    min_rate: int = 0  # bytes/s a download must average over each rate_window (0: none)
    rate_window: float = 60.0


@dataclass(frozen=True)
class Fetched:
    file: BinaryIO  # the archive from its start, to be read forward; closed when fetch() exits
    name: str  # the archive's file name, from the URL path
    label: str  # the source as messages show it
    # Waits until the whole archive is in; returns its hex sha256 (already checked
    # against any expected digest) or raises the download's fault.
    complete: Callable[[], str]
    signed_by: str = ""  # Subject of the verified signer; "" when no signature was given


@contextmanager
def fetch(
    source: PackageSource,
    options: FetchOptions,
    progress: ProgressCallback,
    cancel: Cancel,
    *,
    download_dir: Path,
    unpack_dir: Path,
    signature: Pending | None = None,
) -> Iterator[Fetched]:
    """Fetch ``source``; the archive is readable inside the ``with`` block.

    ``download_dir`` holds a download that must be verified before it is unpacked;
    ``unpack_dir`` is where the archive will be unpacked (checked for free space
    when nothing is stored first). ``signature``: verified before the block is entered.
    """
    label = display_url(source.url)
    expected = integrity.parse_expected(source.digest)
    local = local_path(source.url, label)
    if local is not None:
        with open_local(local, label) as opened:
            size = _local_size(opened, options, label)
            if not expected and options.sibling_digest:
                expected = _local_sibling_digest(local, label)
            if signature is not None:  # nothing is unpacked before the signature verifies: read twice
                check = _SignatureCheck(signature, label)
                digest = copy_hashed(opened, None, size, options, progress, cancel, label, check.hasher)
                _verify(digest, expected, label)
                signed_by = check.verify(digest)
                opened.seek(0)
                yield Fetched(opened, local.name, label, lambda: digest, signed_by)
                return
            with _HashingReader(opened, size, options, progress, cancel, label) as reader:

                def complete() -> str:
                    digest = reader.finish()
                    _verify(digest, expected, label)
                    return digest

                yield Fetched(cast(BinaryIO, reader), local.name, label, complete)
        return
    split_url(source.url)
    auth = BasicAuth(source.username, source.password) if source.username or source.password else None
    if not expected and options.sibling_digest:
        expected = _http_sibling_digest(source.url, auth, options, label)
    name = Path(unquote(urlsplit(source.url).path)).name
    transfer = _Transfer(source.url, auth, options, progress, cancel, label)
    if expected or signature is not None:
        check = _SignatureCheck(signature, label)
        with transfer.verified(expected, download_dir, check) as (file, digest):
            yield Fetched(file, name, label, lambda: digest, check.signed_by)
    else:
        with transfer.streamed(unpack_dir) as (file, complete):
            yield Fetched(file, name, label, complete)


@dataclass(frozen=True)
class _Transfer:
    """One archive download over http(s), in one of two orders."""

    url: str
    auth: BasicAuth | None
    options: FetchOptions
    progress: ProgressCallback
    cancel: Cancel
    label: str

    @contextmanager
    def verified(self, expected: str, download_dir: Path, check: _SignatureCheck) -> Iterator[tuple[BinaryIO, str]]:
        """Download the whole archive into a temporary file, check its digest and signature, then hand it over."""
        with _temporary_file(download_dir) as download:
            with self._open() as reply:
                total = body_size(reply, download_dir, self.options)
                digest = self._copy(reply, download, total, check.hasher)
            _verify(digest, expected, self.label)
            check.verify(digest)
            download.seek(0)
            yield download, digest

    @contextmanager
    def streamed(self, unpack_dir: Path) -> Iterator[tuple[BinaryIO, Callable[[], str]]]:
        """Hand the archive over while it downloads, with a function that waits for its digest."""
        with self._open() as reply:
            total = body_size(reply, unpack_dir, self.options)
            log.info("%s: no digest expected: unpacking while downloading", display_url(reply.url))

            def complete() -> str:
                digest = fed.complete()
                _verify(digest, "", self.label)
                return digest

            with pipeline.feed(lambda pipe: self._copy(reply, pipe, total), reply.abort) as fed:
                yield fed.file, complete

    @contextmanager
    def _open(self) -> Iterator[Reply]:
        with open_url(self.url, self.auth, self.options.http) as reply, self.cancel.hook(reply.abort):
            yield reply

    def _copy(self, reply: Reply, out: BinaryIO, total: int | None, extra: _Hasher | None = None) -> str:
        where = display_url(reply.url)
        pace = _Pace(self.options.min_rate, self.options.rate_window, where)
        return copy_hashed(reply.response, out, total, self.options, self.progress, self.cancel, where, extra, pace)


class _SignatureCheck:
    """The signature of one archive, checked against the digest taken while it streams."""

    def __init__(self, pending: Pending | None, label: str) -> None:
        self.pending = pending
        self.label = label
        self.signed_by = ""
        # sha256 is taken anyway; another digest the signature names is taken beside it.
        self.hasher: _Hasher | None = None
        if pending is not None and pending.hash_name != "sha256":
            self.hasher = hashlib.new(pending.hash_name)

    def verify(self, sha256_hex: str) -> str:
        """Verify (BAD_SIGNATURE if it fails); the signer's Subject, "" when unsigned."""
        if self.pending is None:
            return ""
        digest = self.hasher.digest() if self.hasher is not None else bytes.fromhex(sha256_hex)
        verified = self.pending.verify(digest)
        self.signed_by = verified.signer
        log.info("%s: signature verified, signed by %s", self.label, verified.signer)
        return verified.signer


def _temporary_file(directory: Path) -> BinaryIO:
    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError as exc:
        raise disk_fault(exc, f"cannot create a download file in {directory}") from exc


def _verify(digest: str, expected: str, label: str) -> None:
    if expected:
        integrity.verify(digest, expected, label)
    log.info("%s: sha256 %s%s", label, digest, " (verified)" if expected else "")


def local_path(url: str, label: str) -> Path | None:
    """The path a local source names, or None for http(s); other forms are refused."""
    if url.startswith("/"):
        return Path(url)
    try:
        parts = urlsplit(url)
        has_userinfo = parts.username is not None or parts.password is not None
    except ValueError as exc:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{label}: malformed URL ({exc})") from None
    if has_userinfo:
        raise Fault(
            FaultCode.INVALID_ARGUMENTS, f"{label}: the URL must not carry credentials; use Username and Password"
        )
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if not scheme:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{label}: not an absolute URL or path")
    if scheme != "file":
        raise Fault(FaultCode.UNSUPPORTED_PROTOCOL, f"{label}: scheme {parts.scheme!r} is not supported")
    if parts.netloc not in ("", "localhost"):
        raise Fault(FaultCode.UNSUPPORTED_PROTOCOL, f"{label}: file URLs must name a local path")
    path = Path(url2pathname(parts.path))
    if not path.is_absolute():
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{label}: file URLs must name an absolute path")
    return path


def open_local(path: Path, label: str) -> io.BufferedReader:
    # O_NONBLOCK so that a FIFO given as the source cannot hang the worker in open().
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{label}: cannot open ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{label}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _local_size(file: BinaryIO, options: FetchOptions, label: str) -> int:
    size = os.fstat(file.fileno()).st_size
    if size > options.max_archive_bytes:
        raise Fault(
            FaultCode.SYSTEM_RESOURCES_EXCEEDED,
            f"{label}: archive of {size} bytes exceeds the limit of {options.max_archive_bytes} bytes",
        )
    return size


def _local_sibling_digest(path: Path, label: str) -> str:
    sibling = path.with_name(path.name + ".sha256")
    if not sibling.exists():
        return ""
    with open_local(sibling, f"{label}.sha256") as file:
        data = file.read(_MAX_CHECKSUM_FILE + 1)
    return _parse_sibling(data, path.name, f"{label}.sha256")


def _http_sibling_digest(url: str, auth: BasicAuth | None, options: FetchOptions, label: str) -> str:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        return ""
    sibling = parts._replace(path=parts.path + ".sha256").geturl()
    with open_url(sibling, auth, options.http) as reply:
        status = reply.response.status
        if 400 <= status < 500:
            log.info("%s: no checksum file (HTTP %d)", display_url(sibling), status)
            return ""
        if status != 200:
            raise status_fault(status, reply.response.reason, reply.url)
        try:
            data = reply.response.read(_MAX_CHECKSUM_FILE + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{display_url(sibling)}: {exc}") from None
    return _parse_sibling(data, Path(parts.path).name, display_url(sibling))


def _parse_sibling(data: bytes, archive_name: str, where: str) -> str:
    if len(data) > _MAX_CHECKSUM_FILE:
        raise Fault(FaultCode.CORRUPT_DATA, f"{where}: checksum file larger than {_MAX_CHECKSUM_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Fault(FaultCode.CORRUPT_DATA, f"{where}: checksum file is not text") from None
    log.info("%s: checksum file found", where)
    return integrity.parse_checksum_file(text, archive_name, where)


def body_size(reply: Reply, space_dir: Path, options: FetchOptions) -> int | None:
    """Check a reply before its body is read; the size it announces, None if it did not."""
    label = display_url(reply.url)
    response = reply.response
    if response.status != 200:
        raise status_fault(response.status, response.reason, reply.url)
    total = response.length  # from Content-Length; None when the server did not say
    if total is not None:
        if total > options.max_archive_bytes:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{label}: archive of {total} bytes exceeds the limit of {options.max_archive_bytes} bytes",
            )
        free = _free_bytes(space_dir)
        if total > free:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{label}: archive of {total} bytes does not fit in {space_dir} ({free} bytes free)",
            )
    log.info("downloading %s (%s bytes)", label, "unknown" if total is None else total)
    return total


def copy_hashed(
    source: _Readable,
    out: BinaryIO | None,
    total: int | None,
    options: FetchOptions,
    progress: ProgressCallback,
    cancel: Cancel,
    label: str,
    extra: _Hasher | None = None,
    pace: _Pace | None = None,
) -> str:
    """Read ``source`` to its end in chunks, hashing (sha256, and ``extra`` if given) and (if ``out``)
    writing; return the hex sha256."""
    hasher = hashlib.sha256()
    view = scratch(_CHUNK)
    done = 0
    progress(0, total)
    while True:
        cancel.check(label)
        try:
            count = source.readinto1(view)
        except TimeoutError:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{label}: stalled after {done} bytes") from None
        except (OSError, http.client.HTTPException) as exc:
            cancel.check(label)  # cancelling aborts the connection: that is no read failure
            code = FaultCode.DOWNLOAD_INCOMPLETE if out is not None else FaultCode.FILE_ACCESS_FAILURE
            raise Fault(code, f"{label}: read failed after {done} bytes ({exc!r})") from None
        if not count:
            cancel.check(label)  # nor the end of a body of unknown length
            break
        done += count
        if pace is not None:
            pace.check(done)
        if done > options.max_archive_bytes:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{label}: archive exceeds the limit of {options.max_archive_bytes} bytes",
            )
        chunk = view[:count]
        hasher.update(chunk)
        if extra is not None:
            extra.update(chunk)
        if out is not None:
            try:
                out.write(chunk)
            except OSError as exc:
                raise disk_fault(exc, f"{label}: cannot store the download") from exc
        progress(done, total)
    if total is not None and done < total:
        raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{label}: connection closed after {done} of {total} bytes")
    if out is not None:
        try:
            out.flush()
        except OSError as exc:
            raise disk_fault(exc, f"{label}: cannot store the download") from exc
    return hasher.hexdigest()


class _Pace:
    """A minimum transfer rate, measured over consecutive windows: a server sending a byte
    now and then (never stalling long enough for read_timeout) must not hold a slot for hours."""

    def __init__(self, min_rate: int, window: float, label: str) -> None:
        self._min_rate = min_rate
        self._window = window
        self._label = label
        self._start = time.monotonic()
        self._done = 0

    def check(self, done: int) -> None:
        now = time.monotonic()
        if not self._min_rate or now - self._start < self._window:
            return
        rate = (done - self._done) / (now - self._start)
        if rate < self._min_rate:
            raise Fault(
                FaultCode.DOWNLOAD_INCOMPLETE,
                f"{self._label}: transfer too slow after {done} bytes ({rate:.0f} bytes/s over "
                f"{now - self._start:.0f} s, at least {self._min_rate} needed)",
            )
        self._start, self._done = now, done


class _HashingReader(io.RawIOBase):
    """A local archive read forward and hashed by a thread of its own, a few chunks ahead of
    extraction, so that hashing a chunk overlaps unpacking the one before (on one thread the
    hash added half of ``tar -xf``'s time). The thread reads into buffers it owns and hands
    each over once hashed; :meth:`readinto` copies from them, so what is unpacked is exactly
    what was hashed. :meth:`finish` takes the rest (what follows the archive's end) and
    returns the hex digest; :meth:`close` stops the thread, wherever it is."""

    def __init__(
        self,
        file: io.BufferedReader,
        size: int,
        options: FetchOptions,
        progress: ProgressCallback,
        cancel: Cancel,
        label: str,
    ) -> None:
        super().__init__()
        self._file = file
        self._size = size
        self._limit = options.max_archive_bytes
        self._progress = progress
        self._cancel = cancel
        self._label = label
        self._digest = ""
        self._done = 0  # bytes the thread read
        self._free: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()  # None: stop
        self._ready: queue.SimpleQueue[tuple[memoryview, int] | BaseException | None] = queue.SimpleQueue()  # None: end
        self._buffers = 0  # made so far: a small archive needs few
        self._chunk: memoryview | None = None  # the buffer being copied from
        self._rest = memoryview(b"")  # what is left of it
        self._ended = False
        self._closing = False
        self._thread = threading.Thread(target=self._read_ahead, name="dsm-read-ahead", daemon=True)
        progress(0, size)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._cancel.check(self._label)
        if not self._rest and not self._next():
            return 0
        count = min(len(buffer), len(self._rest))
        with memoryview(buffer) as view:
            view[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count

    def finish(self) -> str:
        while self._next():
            self._cancel.check(self._label)
        if self._done < self._size:
            raise Fault(
                FaultCode.FILE_ACCESS_FAILURE, f"{self._label}: file shrank to {self._done} of {self._size} bytes"
            )
        return self._digest

    def close(self) -> None:
        self._closing = True
        self._free.put(None)
        if self._thread.ident is not None:  # started
            self._thread.join()
        super().close()

    def _next(self) -> bool:
        """Give the exhausted buffer back and take the next one; False at the end of the file."""
        if self._chunk is not None:
            self._free.put(self._chunk)
            self._chunk = None
        if self._ended:
            return False
        item = self._ready.get()
        if item is None:
            self._ended = True
            return False
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        self._chunk, count = item
        self._rest = self._chunk[:count]
        return True

    def _buffer(self) -> memoryview | None:
        """A free buffer (None: stop), made while there are fewer than _AHEAD."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._buffers == _AHEAD:
                return self._free.get()
        self._buffers += 1
        return scratch(_AHEAD_CHUNK)

    def _read_ahead(self) -> None:
        hasher = hashlib.sha256()
        try:
            while (buffer := self._buffer()) is not None and not self._closing:
                self._cancel.check(self._label)
                try:
                    count = self._file.readinto(buffer)
                except OSError as exc:
                    raise Fault(
                        FaultCode.FILE_ACCESS_FAILURE, f"{self._label}: read failed after {self._done} bytes ({exc!r})"
                    ) from None
                if not count:
                    self._digest = hasher.hexdigest()
                    self._ready.put(None)
                    return
                self._done += count
                if self._done > self._limit:
                    raise Fault(
                        FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                        f"{self._label}: archive exceeds the limit of {self._limit} bytes",
                    )
                hasher.update(buffer[:count])
                self._progress(self._done, self._size)
                self._ready.put((buffer, count))
        except BaseException as exc:  # raised where extraction reads next
            self._ready.put(exc)


def _free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize
