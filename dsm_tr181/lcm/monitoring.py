"""What an EU uses beyond memory and CPU (those are sampled by :mod:`.executions`).

* ``DiskSpaceInUse``: the blocks its root filesystem holds — the unpacked files plus what
  the EU has written into it (a writable root filesystem is the DU's own directory) —
  counted once per inode, plus what its data volumes hold, every ``disk_usage_interval``
  seconds in a thread.
* Its processes: ``AssociatedProcessList`` refers to ``Device.DeviceInfo.ProcessStatus.
  Process.{i}`` rows, which this product does not serve, so the parameter stays empty as
  the standard requires for references to rows that do not exist; the processes (PID and
  command line, from the container's cgroup and /proc at the last sample) are shown by
  ``dsmcli eu.detail`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsm_tr181.errors import Fault
from dsm_tr181.schema.types import Value

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)


def tree_kib(root: Path) -> int:
    """KiB of disk the files below ``root`` occupy (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    blocks = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key not in seen:
                seen.add(key)
                blocks += info.st_blocks
    return blocks // 2  # st_blocks counts 512-byte units


def rootfs_of(spec: dict[str, Any]) -> Path:
    return Path(str((spec.get("root") or {}).get("path", "")))


def processes(pids: tuple[int, ...]) -> list[dict[str, Value]]:
    """PID and command line of each process (those gone meanwhile are left out)."""
    found: list[dict[str, Value]] = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        found.append({"pid": pid, "command": raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")})
    return found


async def sample_disk_forever(lcm: Lcm) -> None:
    while True:
        await sample_disk(lcm)
        await asyncio.sleep(lcm.settings.disk_usage_interval)


async def sample_disk(lcm: Lcm) -> None:
    """DiskSpaceInUse of every EU whose DU is installed."""
    for eu in list(lcm.executions.units.values()):
        du = lcm.deployments.records.get(eu.record.du)
        if du is None or du.status != "Installed" or not du.bundle:
            continue
        try:
            spec = lcm.confinement.spec(eu.record, du)
        except (Fault, OSError) as exc:  # a spec that cannot be read leaves the figure as it was
            log.debug("disk usage of %s: %s", eu.record.euid, exc)
            continue
        kib = await asyncio.to_thread(tree_kib, rootfs_of(spec))
        kib += await asyncio.to_thread(lcm.appdata.used_kib, du)
        if eu.record.instance in lcm.executions.units:
            lcm.dm.update(lcm.executions.node(eu), {"DiskSpaceInUse": kib}, quiet=True)
