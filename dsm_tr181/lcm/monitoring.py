"""What an EU uses beyond memory and CPU (those are sampled by :mod:`.executions`).

* ``DiskSpaceInUse``: the blocks its root filesystem holds — the unpacked files plus what
  the EU has written into it (a writable root filesystem is the DU's own directory) —
  counted once per inode, plus what its data volumes hold, every ``disk_usage_interval``
  seconds in a thread. A DU made from an image shares its layers' files with other DUs
  (hard links into the layer store): those files count as the DU's share of its layers
  (each layer's unpacked size divided by the number of DUs using it, see
  :class:`~dsm_tr181.lcm.ports.SharedStorage`), and only the root filesystem's other files
  (its directories, what the EU wrote) are counted by their blocks. As a share moves when
  another DU starts or stops using a layer, the EUs of image DUs are sampled again after
  every install, update and uninstall (:func:`sample_shared`).
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
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault
from dsm_tr181.lcm.ports import SharedStorage
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecutionUnitRecord
from dsm_tr181.schema.types import Value

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)


def tree_kib(root: Path, *, unshared: bool = False) -> int:
    """KiB of disk the files below ``root`` occupy (hard links counted once); ``unshared``:
    leaving out regular files with more than one link (those of an image's layer store)."""
    seen: set[tuple[int, int]] = set()
    blocks = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if unshared and info.st_nlink > 1 and stat.S_ISREG(info.st_mode):
                continue
            if key not in seen:
                seen.add(key)
                blocks += info.st_blocks
    return blocks // 2  # st_blocks counts 512-byte units


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


async def sample_shared(lcm: Lcm) -> None:
    """DiskSpaceInUse of every EU whose DU shares stored parts (after an install, update or uninstall)."""
    await sample_disk(lcm, shared_only=True)


async def shares_parts(lcm: Lcm, bundle: Path) -> bool:
    """Whether ``bundle`` shares stored parts: only then does its install or uninstall move other
    DUs' shares (:func:`sample_shared`); a tar DU's does not."""
    packager = lcm.packager if isinstance(lcm.packager, SharedStorage) else None
    if packager is None:
        return False
    try:
        return await asyncio.to_thread(packager.shared_kib, bundle) is not None
    except (Fault, OSError):  # unreadable: sample the shares again, to be safe
        return True


async def sample_disk(lcm: Lcm, *, shared_only: bool = False) -> None:
    """DiskSpaceInUse of every EU whose DU is installed: the rows picked on the loop, every
    figure taken in one thread hop (one hop and one spec read per EU on the loop cost
    ~0.5 ms each: half a second of the loop per sweep at 1000 EUs), the rows set on the loop."""
    installed = []
    for eu in list(lcm.executions.units.values()):
        du = lcm.deployments.records.get(eu.record.du)
        if du is not None and du.status == "Installed" and du.bundle:
            installed.append((eu, du))
    figures = await asyncio.to_thread(_disk_figures, lcm, [(eu.record, du) for eu, du in installed], shared_only)
    for (eu, _), kib in zip(installed, figures, strict=True):
        if kib is not None and eu.record.instance in lcm.executions.units:
            lcm.dm.update(lcm.executions.node(eu), {"DiskSpaceInUse": kib}, quiet=True)


def _disk_figures(
    lcm: Lcm, units: list[tuple[ExecutionUnitRecord, DeploymentUnitRecord]], shared_only: bool
) -> list[int | None]:
    """Each EU's DiskSpaceInUse in KiB; None where it is left as it is (nothing shared when
    ``shared_only``, or unreadable). Runs in a thread: reads files only."""
    packager = lcm.packager if isinstance(lcm.packager, SharedStorage) else None
    figures: list[int | None] = []
    for record, du in units:
        try:
            shared = None if packager is None else packager.shared_kib(Path(du.bundle))
            if shared is None and shared_only:
                figures.append(None)
                continue
            root = lcm.confinement.persisted_root(record, du)
            kib = tree_kib(root, unshared=shared is not None) + (shared or 0) + lcm.appdata.used_kib(du)
        except (Fault, OSError, ValueError) as exc:  # what cannot be read leaves the figure as it was
            log.debug("disk usage of %s: %s", record.euid, exc)
            figures.append(None)
            continue
        figures.append(kib)
    return figures
