"""Changes to a root filesystem being made into a bundle, never through the image's own symlinks.

Every path is walked component by component from the root with ``O_NOFOLLOW``: an image
whose ``etc`` is a symlink to ``/etc`` gets a BundleError, not a write to the host. A file
written replaces (unlinks) what was there, so a hard link shared with other trees is
never modified in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from dsm_tr181.bundlegen.errors import BundleError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BundleError(f"{path!r}: '..' is not allowed in a container path")
    return parts


@contextlib.contextmanager
def _directory(rootfs: str, parts: list[str], create: bool) -> Iterator[int]:
    """An fd of rootfs/parts (made when ``create``), reached without following symlinks."""
    fd = os.open(rootfs, _DIR)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                next_fd = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise BundleError(f"/{'/'.join(parts)}: /{part} in the image is not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def make_dirs(rootfs: str, path: str) -> None:
    with _directory(rootfs, _parts(path), create=True):
        pass


def write_file(rootfs: str, path: str, content: str, mode: int) -> None:
    *parents, name = _parts(path)
    with _directory(rootfs, parents, create=True) as fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
        file_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=fd)
        with open(file_fd, "w") as file:
            file.write(content)
        os.chmod(name, mode, dir_fd=fd)


def exists(rootfs: str, path: str) -> bool:
    """Whether the path names something in the image (symlinks not followed, a dangling one exists)."""
    *parents, name = _parts(path)
    try:
        with _directory(rootfs, parents, create=False) as fd:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
            return True
    except (OSError, BundleError):
        return False


def remove_library(rootfs: str, path: str) -> None:
    """Remove a library the host's copy replaces; a symlink and the file it names inside the image."""
    *parents, name = _parts(path)
    with _directory(rootfs, parents, create=False) as fd:
        try:
            target = os.readlink(name, dir_fd=fd)
        except OSError:
            target = None
        os.unlink(name, dir_fd=fd)
    if target is not None:
        resolved = posixpath.normpath(target if target.startswith("/") else "/".join(["", *parents, target]))
        with contextlib.suppress(OSError, BundleError):
            remove_library(rootfs, resolved)


def read_in_root(rootfs: str, path: str, limit: int = 64 << 20) -> bytes | None:
    """A file's bytes, symlinks resolved as inside the container (never leaving ``rootfs``); None if absent."""
    current = "/" + "/".join(_parts(path))
    for _ in range(40):
        *parents, name = _parts(current)
        try:
            with _directory(rootfs, parents, create=False) as fd:
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError:
                    file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                    with open(file_fd, "rb") as file:
                        return file.read(limit)
        except (OSError, BundleError):
            return None
        base = "/" + "/".join(parents)
        current = posixpath.normpath(target if target.startswith("/") else posixpath.join(base, target))
    return None


def copy_in(rootfs: str, path: str, source: str, mode: int) -> None:
    """Copy the host file ``source`` to ``path`` (replacing what is there), parents made as needed."""
    *parents, name = _parts(path)
    if not name:
        raise BundleError(f"{path!r}: not a file path")
    with _directory(rootfs, parents, create=True) as fd:
        _unlink_any(fd, name)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777, dir_fd=fd)
        with open(source, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.chmod(name, mode & 0o777, dir_fd=fd)


def symlink_in(rootfs: str, path: str, target: str) -> None:
    *parents, name = _parts(path)
    with _directory(rootfs, parents, create=True) as fd:
        _unlink_any(fd, name)
        os.symlink(target, name, dir_fd=fd)


def _unlink_any(fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise BundleError(f"{name}: a directory is in the way")
    os.unlink(name, dir_fd=fd)


def archive_bundle(bundle: Path, out: Path) -> None:
    """A flat .tar.gz DU (config.json and rootfs/ at the top), renamed into place once complete."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(bundle / "config.json", arcname="config.json")
            tar.add(bundle / "rootfs", arcname="rootfs")
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
