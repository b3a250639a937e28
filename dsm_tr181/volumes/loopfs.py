"""Each application data volume is an ext4 filesystem image of its Capacity, loop-mounted.

``<root>/<key>/image.ext4`` (a sparse file of Capacity MiB made by ``mkfs.ext4`` from
e2fsprogs) is mounted on ``<root>/<key>/mnt`` (``mount -o loop``, util-linux) and
bind-mounted into the EU's container: a writer inside gets ENOSPC when the volume is full
and the host's filesystem is untouched beyond the image. The images survive daemon
restarts; :meth:`LoopVolumes.sweep` mounts the ones still owned and removes the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from dsm_tr181.errors import Fault, FaultCode

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class LoopVolumes:
    def __init__(self, root: Path) -> None:
        self.root = root

    def mountpoint(self, key: str) -> Path:
        return self._dir(key) / "mnt"

    def create(self, key: str, capacity_mib: int) -> None:
        """Make and mount the volume ``key`` (Fault 7227 if it cannot be made)."""
        directory = self._dir(key)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        image = directory / "image.ext4"
        try:
            with open(image, "wb") as handle:
                handle.truncate(capacity_mib << 20)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", key[:16], str(image))
        except (OSError, Fault) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"cannot create volume {key}: {exc}") from None
        self.mount(key)

    def mount(self, key: str) -> None:
        target = self.mountpoint(key)
        if _mounted(target):
            return
        target.mkdir(mode=0o755, exist_ok=True)
        _run("mount", "-o", "loop,nosuid,nodev", str(self._dir(key) / "image.ext4"), str(target))

    def unmount(self, key: str) -> None:
        target = self.mountpoint(key)
        if _mounted(target):
            _run("umount", str(target))  # the loop device is released with it (autoclear)

    def remove(self, key: str) -> None:
        """Unmount and delete the volume (idempotent)."""
        self.unmount(key)
        shutil.rmtree(self._dir(key), ignore_errors=True)

    def wipe(self, key: str) -> None:
        """An empty filesystem again, of the same size."""
        capacity = (self._dir(key) / "image.ext4").stat().st_size >> 20
        self.remove(key)
        self.create(key, capacity)

    def own(self, key: str, uid: int, gid: int) -> None:
        target = self.mountpoint(key)
        if not _mounted(target):
            raise Fault(FaultCode.INTERNAL_ERROR, f"volume {key} is not mounted")
        os.chown(target, uid, gid)

    def used_kib(self, key: str) -> int:
        """KiB in use on the mounted volume (-1 when not mounted)."""
        target = self.mountpoint(key)
        if not _mounted(target):
            return -1
        info = os.statvfs(target)
        return (info.f_blocks - info.f_bfree) * info.f_frsize // 1024

    def sweep(self, owned: set[str]) -> list[str]:
        """Mount the volumes in ``owned``; remove every other one found. The keys removed."""
        removed = []
        if self.root.is_dir():
            for directory in sorted(self.root.iterdir()):
                if directory.name not in owned:
                    self.remove(directory.name)
                    removed.append(directory.name)
        for key in owned:
            if (self._dir(key) / "image.ext4").exists():
                self.mount(key)
        return removed

    def _dir(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"bad volume key {key!r}")
        return self.root / key


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"{argv[0]}: {done.stderr.strip() or done.returncode}")
