"""Safe, streaming, member-by-member extraction of a DU archive into a staging directory.

Python's tarfile only parses headers here; file data is copied by this module
through one reused buffer (no allocation per chunk), and every file is created by
it, so the rules below hold whatever tarfile version or extraction filters are
present. The archive is read strictly forward, from its start to its end, so it
may be a pipe that a download is still filling (:mod:`~dsm_tr181.packagers.pipeline`).

- Compression is told by content: gzip, xz, zstd (when the optional ``zstandard`` package
  is installed; a window over 128 MiB is refused) or none (bzip2 is refused).
  A truncated or corrupt compressed stream, a tar without its end-of-archive
  block, or more than 16 MiB of data after that block is CORRUPT_DATA.
- Member names: absolute paths and ``..`` components are refused; ``./`` prefixes
  are dropped (``./`` alone is the staging directory itself).
- Nothing is written through a symlink: a member whose parent path is a symlink
  or not a directory is refused, files are created with ``O_EXCL|O_NOFOLLOW``, and
  a member naming a path that already exists is refused (a directory may repeat).
- A hardlink must name a regular file extracted earlier from the same archive.
- Symlinks are created as they are and reported in :class:`Extracted`: where they
  may point depends on the bundle layout, checked by :mod:`dsm_tr181.packagers.bundle`.
- Device nodes and FIFOs are refused unless ``allow_special_files``; other member
  types (sockets, volume labels, unknown) always.
- setuid, setgid and sticky bits are dropped. Directories keep rwx for their owner
  so that the bundle can always be removed. Numeric owners are applied when running
  as root, as ``tar -x`` does; modification times are kept.
- More members than ``max_entries``, or regular files adding up to more than
  ``max_unpacked_bytes``, is SYSTEM_RESOURCES_EXCEEDED. A pax or GNU long-name
  header over 1 MiB is CORRUPT_DATA before tarfile reads it into memory, and so is
  a corrupt header anywhere (not taken for the end of the archive).
"""

from __future__ import annotations

import errno
import gzip
import io
import lzma
import math
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, cast

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.worker import Cancel, disk_fault, scratch

try:  # optional: the "zstd" extra
    import zstandard
except ImportError:
    _HAVE_ZSTD = False
    _ZSTD_ERRORS: tuple[type[Exception], ...] = ()  # nothing raises them then
else:
    _HAVE_ZSTD = True
    _ZSTD_ERRORS = (zstandard.ZstdError,)


_CHUNK = 256 * 1024  # file data per read and write
_BUFFER = 64 * 1024  # read-ahead for headers; larger reads bypass it
_READ_ERRORS: tuple[type[Exception], ...] = (EOFError, zlib.error, lzma.LZMAError, *_ZSTD_ERRORS, OSError)
_CORRUPT_ERRORS: tuple[type[Exception], ...] = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, *_ZSTD_ERRORS)
_MAX_HEADER_BYTES = 1 << 20
_MAX_TRAILING_BYTES = 16 << 20
_XZ_MEMORY_LIMIT = 128 << 20  # "xz -9" needs 65 MiB to decode
_ZSTD_MAX_WINDOW = 128 << 20  # zstd's own default limit for decoding (--long=27)
_MAX_MTIME = 1 << 33  # year 2242: keeps utime() clear of overflow on a forged header
_MAX_ID = (1 << 32) - 2  # uid/gid chown() accepts ((uid_t)-1 means "unchanged")
_EXTENDED_HEADERS = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
_KINDS = {stat.S_IFDIR: "directory", stat.S_IFREG: "regular file", stat.S_IFLNK: "symlink"}


class ArchiveStream(Protocol):
    """A binary stream read forward: files, pipes, HTTP responses, verifying readers, decoders."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int: ...


@dataclass(frozen=True)
class ExtractLimits:
    max_unpacked_bytes: int
    max_entries: int
    allow_special_files: bool


@dataclass(frozen=True)
class Extracted:
    unpacked_bytes: int  # sum of the regular files' sizes (hardlinks not counted twice)
    entries: int
    # Each symlink as (path components relative to the staging directory, target).
    symlinks: list[tuple[tuple[str, ...], str]] = field(default_factory=list)


def extract_archive(
    archive: BinaryIO | ArchiveStream, staging: Path, limits: ExtractLimits, label: str, cancel: Cancel
) -> Extracted:
    """Unpack ``archive`` (read from its start to its end) into the empty directory ``staging``."""
    # typing.BinaryIO does not declare readinto(), which every binary stream given here has.
    source = _Source(_decompressed(cast(ArchiveStream, archive), label), label)
    writer = _Writer(staging, limits, label, cancel, source)
    try:
        # Mode "r" over a forward-only source: tarfile reads the headers, _Writer the data.
        # tarfile's fileobj type asks for write/close too; mode "r" uses only read, seek and tell.
        tar = tarfile.TarFile(fileobj=cast(BinaryIO, source), tarinfo=_BoundedTarInfo)
        while (member := tar.next()) is not None:
            cancel.check(label)
            writer.add(member)
            # tarfile would otherwise keep every TarInfo; typeshed omits this undocumented list next() appends to
            tar.members.clear()  # type: ignore[attr-defined]
        end_of_members = tar.offset
        source.drain()
        if source.count < end_of_members + tarfile.BLOCKSIZE:
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: archive truncated (no end-of-archive block)")
        writer.finish()
    except tarfile.TarError as exc:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: not a valid tar archive ({exc})") from None
    except OSError as exc:
        raise _write_fault(exc, label) from exc
    except (ValueError, OverflowError) as exc:  # a header value no system call takes (the checks below name most)
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: impossible member header ({exc})") from None
    return writer.result()


def _write_fault(exc: OSError, label: str) -> Fault:
    if exc.errno == errno.ENAMETOOLONG:
        return Fault(FaultCode.CORRUPT_DATA, f"{label}: member name too long for this filesystem")
    return disk_fault(exc, f"{label}: cannot unpack")


def _decompressed(archive: ArchiveStream, label: str) -> ArchiveStream:
    magic = _read_exactly(archive, 6)
    stream = io.BufferedReader(_Prefixed(magic, archive), _BUFFER)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return io.BufferedReader(_XzReader(stream))
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return _zstd_reader(stream, label)
    if magic.startswith(b"BZh"):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: bzip2 compression is not supported")
    return stream


def _zstd_reader(stream: io.BufferedReader[_Prefixed], label: str) -> ArchiveStream:
    if not _HAVE_ZSTD:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: zstd compression needs the zstandard package")
    decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    reader = decompressor.stream_reader(stream, read_across_frames=True, closefd=False)
    return io.BufferedReader(reader)


def _read_exactly(archive: ArchiveStream, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the archive (a pipe may deliver them piecemeal)."""
    data = b""
    while len(data) < size and (more := archive.read(size - len(data))):
        data += more
    return data


class _Prefixed(io.RawIOBase):
    """The bytes already read to tell the compression, then the rest of the archive: no seek needed."""

    def __init__(self, prefix: bytes, rest: ArchiveStream) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._prefix:
            return self._rest.readinto(buffer)
        count = min(len(buffer), len(self._prefix))
        buffer[:count] = self._prefix[:count]
        self._prefix = self._prefix[count:]
        return count


class _XzReader(io.RawIOBase):
    """xz streams (concatenated ones too) decoded under a memory limit, which LZMAFile cannot set.

    A forged block header may ask for a dictionary of up to 4 GiB, and liblzma would
    grow it as the output does.
    """

    def __init__(self, raw: ArchiveStream) -> None:
        self._raw = raw
        self._decoder = _xz_decoder()
        self._input = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._decoder.eof:
                # Between streams only zero padding or the next stream may follow.
                self._input = (self._decoder.unused_data + self._input).lstrip(b"\0")
                if not self._input:
                    self._input = self._raw.read(_CHUNK)
                    if not self._input:
                        return 0
                    continue
                self._decoder = _xz_decoder()
            if self._decoder.needs_input and not self._input:
                self._input = self._raw.read(_CHUNK)
                if not self._input:
                    raise EOFError("xz stream ended before its end marker")
            data, self._input = self._input, b""
            output = self._decoder.decompress(data, len(buffer))
            if output:
                buffer[: len(output)] = output
                return len(output)


def _xz_decoder() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMORY_LIMIT)


class _Source:
    """The decompressed archive, read forward only: counted, with read failures made faults.

    tarfile reads headers with ``read`` and skips padding with ``seek``; file data is
    copied with ``readinto`` into the writer's buffer.
    """

    def __init__(self, inner: ArchiveStream, label: str) -> None:
        self._inner = inner
        self._label = label
        self._scratch = scratch(_CHUNK)
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except _READ_ERRORS as exc:
            raise self._fault(exc) from None
        self.count += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer``; fewer bytes only at the end of the archive."""
        try:
            count = self._inner.readinto(buffer)
        except _READ_ERRORS as exc:
            raise self._fault(exc) from None
        self.count += count
        return count

    def tell(self) -> int:
        return self.count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Skip forward to ``offset``; a stream cannot go back."""
        if whence != io.SEEK_SET or offset < self.count:
            raise tarfile.ReadError(f"cannot seek back to offset {offset} in a stream")
        while self.count < offset:
            if not self.readinto(self._scratch[: min(_CHUNK, offset - self.count)]):
                break  # tarfile's read(1) after the seek reports the end of data
        return self.count

    def drain(self) -> None:
        """Read what follows the last member (end blocks, padding) to check the stream is whole."""
        end = self.count + _MAX_TRAILING_BYTES
        while self.readinto(self._scratch):
            if self.count > end:
                raise Fault(FaultCode.CORRUPT_DATA, f"{self._label}: unexpected data after the end of the archive")

    def _fault(self, exc: BaseException) -> Fault:
        if isinstance(exc, _CORRUPT_ERRORS):
            return Fault(FaultCode.CORRUPT_DATA, f"{self._label}: compressed data truncated or corrupt ({exc})")
        return Fault(FaultCode.INTERNAL_ERROR, f"{self._label}: cannot read the archive ({exc})")


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers, which tarfile would read whole into memory,
    and corrupt headers after the first, which tarfile would take for the end of the archive."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        # typeshed omits these two tarfile exceptions (not in its __all__); frombuf raises them
        except tarfile.InvalidHeaderError as exc:  # type: ignore[attr-defined]
            raise tarfile.SubsequentHeaderError(str(exc)) from None  # type: ignore[attr-defined]  # next() makes it a ReadError

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_HEADERS and self.size > _MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"extended header of {self.size} bytes")
        # a private hook (stable since Python 2) that typeshed does not declare
        member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return member


def _components(name: str, label: str, what: str) -> tuple[str, ...]:
    """A member (or hardlink target) name as safe path components; () for the top itself."""
    if "\0" in name:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {what} {name!r}: NUL byte in the name")
    if name.startswith("/"):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {what} {name!r}: absolute path")
    parts = tuple([part for part in name.split("/") if part not in ("", ".")])
    if ".." in parts:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {what} {name!r}: '..' component")
    return parts


class _Writer:
    """Creates members below ``root`` and remembers the directories it made there.

    Other names are not kept: every system call that creates one fails if the name is
    taken (O_EXCL, symlink, link, mknod), which is how a duplicate is found, and what a
    name is (a hardlink's target) is read with lstat, below directories this writer made,
    so no symlink is followed. A dict of every name held ~10 MiB for 100k members until
    the end, in small blocks that then kept the daemon's memory fragmented."""

    def __init__(self, root: Path, limits: ExtractLimits, label: str, cancel: Cancel, source: _Source) -> None:
        self._root = str(root)
        self._source = source
        self._buffer = scratch(_CHUNK)
        self._limits = limits
        self._label = label
        self._cancel = cancel
        self._as_root = os.geteuid() == 0
        # Every directory made, and its metadata, applied last (nothing more is written into them).
        self._directories: dict[str, tarfile.TarInfo | None] = {"": None}
        self._symlinks: list[tuple[tuple[str, ...], str]] = []
        self._bytes = 0
        self._entries = 0

    def result(self) -> Extracted:
        return Extracted(self._bytes, self._entries, self._symlinks)

    def add(self, member: tarfile.TarInfo) -> None:
        self._entries += 1
        if self._entries > self._limits.max_entries:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{self._label}: more than {self._limits.max_entries} archive members",
            )
        self._check_header(member)
        parts = _components(member.name, self._label, "member")
        if not parts:
            if not member.isdir():
                self._refuse(member, "names the top directory but is not a directory")
            self._directories[""] = member
            return
        name = "/".join(parts)
        if len(parts) > 1 and name.rpartition("/")[0] not in self._directories:
            self._make_parents(parts, member)
        path = f"{self._root}/{name}"
        try:
            if member.isreg():
                self._add_file(member, path)
            elif member.isdir():
                if name not in self._directories:
                    os.mkdir(path, 0o700)
                self._directories[name] = member
            elif member.issym():
                self._add_symlink(member, path, parts)
            elif member.islnk():
                self._add_hardlink(member, path)
            elif member.ischr() or member.isblk() or member.isfifo():
                self._add_special(member, path)
            else:
                self._refuse(member, f"unsupported member type {member.type!r}")
        except FileExistsError:
            self._refuse(member, f"duplicate member (a {self._kind(name)} of that name came before)")

    def finish(self) -> None:
        """Give directories their own mode, owner and time."""
        for name, member in self._directories.items():
            path = f"{self._root}/{name}" if name else self._root
            if member is None:
                os.chmod(path, 0o755)
                continue
            if self._as_root:
                os.chown(path, member.uid, member.gid, follow_symlinks=False)
            os.chmod(path, (member.mode & 0o777) | 0o700)
            os.utime(path, _times(member), follow_symlinks=False)

    def _check_header(self, member: tarfile.TarInfo) -> None:
        """Values a pax header can forge that no system call would take."""
        if not isinstance(member.mtime, int) and not math.isfinite(member.mtime):
            self._refuse(member, f"modification time {member.mtime!r}")
        for what, value in (("uid", member.uid), ("gid", member.gid)):
            if not 0 <= value <= _MAX_ID:
                self._refuse(member, f"{what} {value} out of range")
        if "\0" in member.linkname:
            self._refuse(member, "NUL byte in the link target")

    def _refuse(self, member: tarfile.TarInfo, reason: str) -> None:
        raise Fault(FaultCode.CORRUPT_DATA, f"{self._label}: member {member.name!r}: {reason}")

    def _kind(self, name: str) -> str | None:
        """What was made at ``name`` (whose parent is a directory made here), None if nothing."""
        try:
            mode = os.lstat(f"{self._root}/{name}").st_mode
        except FileNotFoundError:
            return None
        return _KINDS.get(stat.S_IFMT(mode), "special file")

    def _make_parents(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self._directories:
                continue
            try:
                os.mkdir(f"{self._root}/{prefix}", 0o700)
            except FileExistsError:
                self._refuse(member, f"its parent {prefix!r} is a {self._kind(prefix)}, not a directory")
            self._directories[prefix] = None

    def _add_file(self, member: tarfile.TarInfo, path: str) -> None:
        pieces = _pieces(member, self._label)
        self._bytes += sum(size for _, size in pieces)  # a sparse file counts the data it holds, not its holes
        if self._bytes > self._limits.max_unpacked_bytes:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{self._label}: unpacked files exceed {self._limits.max_unpacked_bytes} bytes at {member.name!r}",
            )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if member.sparse is None:
                self._copy(fd, member.size, member)
            else:
                for offset, size in pieces:  # holes stay holes: they take no blocks
                    os.lseek(fd, offset, os.SEEK_SET)
                    self._copy(fd, size, member)
                os.ftruncate(fd, member.size)
            if self._as_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o777)
            os.utime(fd, _times(member))
        finally:
            os.close(fd)

    def _copy(self, fd: int, size: int, member: tarfile.TarInfo) -> None:
        remaining = size
        while remaining:
            self._cancel.check(self._label)
            count = self._source.readinto(self._buffer[: min(_CHUNK, remaining)])
            if not count:
                raise tarfile.ReadError(f"unexpected end of data in {member.name!r}")
            chunk = self._buffer[:count]
            while chunk:  # a short write only happens when the disk fills up
                chunk = chunk[os.write(fd, chunk) :]
            remaining -= count

    def _add_symlink(self, member: tarfile.TarInfo, path: str, parts: tuple[str, ...]) -> None:
        if not member.linkname:
            self._refuse(member, "symlink with an empty target")
        os.symlink(member.linkname, path)
        self._symlinks.append((parts, member.linkname))
        if self._as_root:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        os.utime(path, _times(member), follow_symlinks=False)

    def _add_hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target = "/".join(_components(member.linkname, self._label, f"hardlink {member.name!r} to"))
        # lstat of the target is safe only below directories made here: none is a symlink
        if target.rpartition("/")[0] not in self._directories or self._kind(target) != _KINDS[stat.S_IFREG]:
            self._refuse(member, f"hardlink to {member.linkname!r}, which is not a regular file extracted before it")
        os.link(f"{self._root}/{target}", path, follow_symlinks=False)

    def _add_special(self, member: tarfile.TarInfo, path: str) -> None:
        kind = "FIFO" if member.isfifo() else "device node"
        if not self._limits.allow_special_files:
            self._refuse(member, f"{kind} not allowed (allow_special_files is off)")
        if member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            file_type = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, 0o600 | file_type, os.makedev(member.devmajor, member.devminor))
        if self._as_root:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        os.chmod(path, member.mode & 0o777)
        os.utime(path, _times(member), follow_symlinks=False)


def _pieces(member: tarfile.TarInfo, label: str) -> list[tuple[int, int]]:
    """Where a regular member's data goes in its file, as (offset, size): all of it at 0, or a
    sparse member's map (its data in the archive is these pieces one after the other)."""
    if member.sparse is None:
        return [(0, member.size)]
    # typeshed declares bytes; tarfile stores the sparse map as (offset, size) pairs
    sparse = cast("list[tuple[int, int]]", member.sparse)
    pieces = [(offset, size) for offset, size in sparse if size]
    end = 0
    for offset, size in pieces:
        if offset < end or offset + size > member.size:
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: member {member.name!r}: sparse map out of order or bounds")
        end = offset + size
    return pieces


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """Access and modification time for utime(): the member's mtime, within range."""
    mtime = min(max(int(member.mtime), 0), _MAX_MTIME)
    return mtime, mtime
