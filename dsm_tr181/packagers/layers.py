"""Assemble a root filesystem from stored layers, bottom to top, as OCI's layer changesets say.

Per layer and directory: an opaque marker (``.wh..wh..opq``) first empties what the
layers below put in that directory; each whiteout ``.wh.NAME`` removes ``NAME``
from below; every other entry replaces what is below it, except that a directory
over a directory is merged into it. Markers are never copied into the result.

Regular files become hard links to the store (one copy on disk for every DU using
the layer; a copy when the store is on another filesystem); directories are made
anew with the layer's owner, mode and time; symlinks and, when extraction allowed
them, device nodes and FIFOs are recreated. Only directories this module made are
ever entered, so nothing is written through a symlink of the image.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.worker import Cancel

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def apply_layer(layer: str, rootfs: str, label: str, cancel: Cancel) -> None:
    """Lay the stored layer directory ``layer`` over ``rootfs`` (a directory this module made)."""
    _merge(layer, rootfs, label, cancel)
    _own(os.lstat(layer), rootfs)


def _merge(source: str, target: str, label: str, cancel: Cancel) -> None:
    cancel.check(label)
    names = sorted(os.listdir(source))
    if OPAQUE in names:
        for name in os.listdir(target):
            _remove(f"{target}/{name}")
    for name in names:
        if name.startswith(WHITEOUT) and name != OPAQUE:
            hidden = name[len(WHITEOUT) :]
            if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT):
                raise Fault(FaultCode.CORRUPT_DATA, f"{label}: malformed whiteout {name!r}")
            _remove(f"{target}/{hidden}")
    for name in names:
        if name.startswith(WHITEOUT):
            continue
        src, dst = f"{source}/{name}", f"{target}/{name}"
        info = os.lstat(src)
        try:
            below = os.lstat(dst).st_mode
        except FileNotFoundError:
            below = None
        if stat.S_ISDIR(info.st_mode):
            if below is not None and not stat.S_ISDIR(below):
                _remove(dst)
                below = None
            if below is None:
                os.mkdir(dst, 0o700)
            _merge(src, dst, label, cancel)
            _own(info, dst)
            continue
        if below is not None:
            _remove(dst)
        if stat.S_ISREG(info.st_mode):
            _link(src, dst, info)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), dst)
            os.chown(dst, info.st_uid, info.st_gid, follow_symlinks=False)
            os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        else:  # a device node or FIFO the extraction let through (allow_special_files)
            os.mknod(dst, info.st_mode, info.st_rdev)
            _own(info, dst)


def _link(src: str, dst: str, info: os.stat_result) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
        shutil.copyfile(src, dst, follow_symlinks=False)
        _own(info, dst)


def _own(info: os.stat_result, path: str) -> None:
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)
    mode = stat.S_IMODE(info.st_mode)
    os.chmod(path, mode | 0o700 if stat.S_ISDIR(info.st_mode) else mode)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
