"""Device.SoftwareModules.ExecEnv.{i}.ApplicationData.{i}: the data volumes of DUs.

InstallDU()'s ``ApplicationData.{i}`` inputs (Name, Capacity MiB, Retain, AccessPath;
``Encrypted`` must be false — this device has no encrypted storage, 7004 otherwise) become
volumes of exactly that capacity (:class:`~dsm_tr181.lcm.ports.Volumes`), owned by the DU's
UUID (ApplicationUUID), bind-mounted read-write at AccessPath into each of its EUs. A
user-namespaced EU's volumes have their top directory owned by its mapped root (the first
UID/GID of its range), given at every start.

* A volume is journaled (``creating``) before it is made and becomes ``ready`` in the
  commit of the operation that made it; at start, unfinished ones and any volume without a
  record are removed, and the ready ones mounted.
* ``UntilStopped``: emptied whenever the EU starts again (the data of a run is lost once
  the DU's EUs stopped). ``Forever``: kept across stops, restarts and reboots.
* Update(): names not there yet are created; with ``RetainData`` true the existing volumes
  are carried forward unchanged, otherwise the ones the Update names are emptied and the
  others removed once the new version is proven. Their contents are copied aside before the
  new version runs and put back if it is rolled back (lcm/deployments.py).
  Uninstall(): ``Forever`` volumes stay (with their rows) when RetainData
  is true, reused by a later install of the same UUID and Name; everything else goes.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import Volumes
from dsm_tr181.lcm.records import AppDataRecord, DeploymentUnitRecord
from dsm_tr181.lcm.tables import EE_TABLE, as_int
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.nodes import Node

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

RETAIN = ("UntilStopped", "Forever")


@dataclass(frozen=True)
class VolumeInput:
    name: str
    capacity_mib: int
    retain: str
    access_path: str


async def _copy(source: Path, target: Path) -> None:
    """``source``'s contents into ``target`` with owners, modes and times (cp -a)."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "cp", "-a", "--", f"{source}/.", str(target), stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode:
        raise Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"copying application data: {err.decode(errors='replace')}")


def parse_rows(rows: list[dict[str, Value]]) -> tuple[VolumeInput, ...]:
    """``ApplicationData.{i}`` inputs; Fault 7004 for what cannot be honoured."""
    volumes = []
    for row in rows:
        name, path = str(row.get("Name", "")), str(row.get("AccessPath", ""))
        capacity, retain = as_int(row.get("Capacity", 0)), str(row.get("Retain", ""))
        if row.get("Encrypted") is True:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"ApplicationData {name!r}: this device has no encrypted storage")
        if not name or capacity < 1 or retain not in RETAIN:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"ApplicationData {name!r}: Name, Capacity >= 1 and Retain needed")
        if not posixpath.isabs(path) or posixpath.normpath(path) != path or path == "/":
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"ApplicationData AccessPath {path!r} is not an absolute path")
        volumes.append(VolumeInput(name, capacity, retain, path))
    if len({v.name for v in volumes}) != len(volumes) or len({v.access_path for v in volumes}) != len(volumes):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "two ApplicationData inputs have the same Name or AccessPath")
    return tuple(volumes)


class AppData:
    def __init__(self, lcm: Lcm, volumes: Volumes | None) -> None:
        self.lcm = lcm
        self.volumes = volumes
        self.records: dict[str, AppDataRecord] = {}

    def install_hooks(self) -> None:
        self.lcm.dm.on_get(EE_TABLE + "{i}.ApplicationData.{i}.Utilization", self._utilization)

    # -- start ---------------------------------------------------------------------------------

    async def restore(self, stored: list[AppDataRecord]) -> None:
        """Unfinished volumes go; the others are mounted and served."""
        unfinished = [r for r in stored if r.state != "ready" or r.ee not in self.lcm.execenvs.records]
        if unfinished:
            self.lcm.commit(delete=list(unfinished))
        ready = [r for r in stored if r not in unfinished]
        if self.volumes is not None:
            try:
                removed = await asyncio.to_thread(self.volumes.sweep, {r.key() for r in ready})
            except Fault as fault:  # a volume that cannot be mounted fails its EU's start instead
                log.error("application data volumes: %s", fault)
                removed = []
            for key in removed:
                log.warning("removed application data volume %s: no operation owns it", key)
        for record in sorted(ready, key=lambda r: (r.ee, r.instance)):
            self._add(record)

    # -- per DU ---------------------------------------------------------------------------------

    def of(self, du: DeploymentUnitRecord) -> list[AppDataRecord]:
        return [r for r in self.records.values() if r.ee == du.ee and r.application_uuid == du.uuid]

    def mounts(self, du: DeploymentUnitRecord, leaving: frozenset[str] = frozenset()) -> tuple[tuple[str, str], ...]:
        """(host directory, AccessPath) of each volume the DU's EUs get (but those named in ``leaving``)."""
        if self.volumes is None:
            return ()
        return tuple(
            (str(self.volumes.mountpoint(r.key())), r.access_path) for r in self.of(du) if r.name not in leaving
        )

    def leaving(self, du: DeploymentUnitRecord, named: set[str], retain_data: bool) -> frozenset[str]:
        """The names of the volumes an Update without RetainData removes (the ones it does not name)."""
        if retain_data:
            return frozenset()
        return frozenset(r.name for r in self.of(du) if r.name not in named)

    async def provide(self, du: DeploymentUnitRecord, wanted: Iterable[VolumeInput]) -> list[AppDataRecord]:
        """Create the volumes of ``wanted`` the DU does not have yet (journaled ``creating``);
        the new records, to commit as ``ready`` with the operation (or :meth:`discard`)."""
        wanted = list(wanted)
        if not wanted:
            return []
        if self.volumes is None:
            raise Fault(FaultCode.INVALID_ARGUMENTS, "ApplicationData inputs are not supported by this daemon")
        have = {r.name: r for r in self.of(du)}
        created: list[AppDataRecord] = []
        try:
            for item in wanted:
                old = have.get(item.name)
                if old is not None:
                    if old.access_path != item.access_path:
                        old.access_path = item.access_path  # same data, seen elsewhere
                        self.lcm.commit(put=[old])
                        self._refresh(old)
                    continue
                record = AppDataRecord(
                    ee=du.ee,
                    instance=self._next_instance(du.ee),
                    application_uuid=du.uuid,
                    name=item.name,
                    capacity_mib=item.capacity_mib,
                    retain=item.retain,
                    access_path=item.access_path,
                )
                self.records[record.key()] = record
                self.lcm.commit(put=[record])  # journaled before the volume exists
                created.append(record)
                await asyncio.to_thread(self.volumes.create, record.key(), record.capacity_mib)
        except BaseException:
            await self.discard(created)
            raise
        return created

    def ready(self, created: list[AppDataRecord]) -> list[AppDataRecord]:
        """Mark ``created`` ready (the caller commits them) and serve their rows."""
        for record in created:
            record.state = "ready"
            self._add(record)
        return created

    async def discard(self, records: list[AppDataRecord]) -> None:
        """Remove volumes, their records and rows."""
        for record in records:
            if self.volumes is not None:
                await asyncio.to_thread(self.volumes.remove, record.key())
            self.records.pop(record.key(), None)
            row = self._row_path(record)
            if row and self.lcm.dm.find_node(row) is not None:
                self.lcm.dm.delete_row(row)
        if records:
            self.lcm.commit(delete=list(records))

    async def release(self, du: DeploymentUnitRecord, retain_data: bool) -> None:
        """At Uninstall: keep Forever volumes when ``retain_data``, remove the rest."""
        await self.discard([r for r in self.of(du) if not (retain_data and r.retain == "Forever")])

    async def wipe_for_update(self, du: DeploymentUnitRecord, named: set[str], retain_data: bool) -> None:
        """Update() without RetainData, before the new EUs start: the volumes it names are emptied."""
        if retain_data or self.volumes is None:
            return
        for record in self.of(du):
            if record.name in named:
                await asyncio.to_thread(self.volumes.wipe, record.key())

    async def after_update(self, du: DeploymentUnitRecord, named: set[str], retain_data: bool) -> None:
        """Update() without RetainData, once the new version is proven: the volumes it did not
        name are removed (kept until then: a rollback needs them)."""
        if retain_data or self.volumes is None:
            return
        gone = self.leaving(du, named, retain_data)
        await self.discard([r for r in self.of(du) if r.name in gone])

    async def snapshot(self, records: list[AppDataRecord], directory: Path) -> None:
        """Copy the volumes' contents into ``directory``/<key> (Update(): what a rollback restores)."""
        if self.volumes is None or not records:
            return
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for record in records:
            await asyncio.to_thread(self.volumes.mount, record.key())
            await _copy(self.volumes.mountpoint(record.key()), directory / record.key())

    async def drop_snapshot(self, directory: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    async def restore_snapshot(self, directory: Path) -> None:
        """Put back the contents :meth:`snapshot` took of the volumes that still exist."""
        if self.volumes is None or not directory.is_dir():
            return
        for saved in sorted(directory.iterdir()):
            if saved.name in self.records:
                await asyncio.to_thread(self.volumes.wipe, saved.name)
                await _copy(saved, self.volumes.mountpoint(saved.name))

    async def before_start(self, du: DeploymentUnitRecord, owner: int | None = None) -> None:
        """Every volume mounted (never an EU writing into a bare directory of the host),
        UntilStopped ones empty; Fault otherwise. ``owner``: the host UID/GID a user-namespaced
        EU's root is mapped to, which gets each volume's top directory so the EU can write it
        (what it writes there is owned by its mapped UIDs already)."""
        if self.volumes is None:
            return
        for record in self.of(du):
            if record.retain == "UntilStopped":
                await asyncio.to_thread(self.volumes.wipe, record.key())
            else:
                await asyncio.to_thread(self.volumes.mount, record.key())
            if owner is not None:
                await asyncio.to_thread(self.volumes.own, record.key(), owner, owner)

    def used_kib(self, du: DeploymentUnitRecord) -> int:
        if self.volumes is None:
            return 0
        return sum(max(0, self.volumes.used_kib(r.key())) for r in self.of(du))

    # -- rows -----------------------------------------------------------------------------------

    def _add(self, record: AppDataRecord) -> Node | None:
        self.records[record.key()] = record
        path = self._table(record)
        if not path:
            return None
        values: dict[str, Value] = {
            "Name": record.name,
            "Capacity": record.capacity_mib,
            "Encrypted": False,
            "Retain": record.retain,
            "AccessPath": record.access_path,
            "ApplicationUUID": record.application_uuid,
        }
        return self.lcm.dm.add_row(path, values, number=record.instance)

    def _refresh(self, record: AppDataRecord) -> None:
        row = self._row_path(record)
        if row and self.lcm.dm.find_node(row) is not None:
            self.lcm.dm.update(row, {"AccessPath": record.access_path})

    def _table(self, record: AppDataRecord) -> str:
        if record.ee not in self.lcm.execenvs.records:
            return ""
        return self.lcm.execenvs.ref(record.ee) + ".ApplicationData."

    def _row_path(self, record: AppDataRecord) -> str:
        table = self._table(record)
        return f"{table}{record.instance}." if table else ""

    def _next_instance(self, ee: str) -> int:
        return 1 + max((r.instance for r in self.records.values() if r.ee == ee), default=0)

    def _utilization(self, node: Node) -> int:
        """MiB in use on the volume."""
        ee = self.lcm.execenvs.name_of(node.parent)  # type: ignore[arg-type]
        record = self.records.get(f"{ee}-{node.number}")
        if record is None or self.volumes is None:
            return 0
        return max(0, self.volumes.used_kib(record.key())) // 1024
