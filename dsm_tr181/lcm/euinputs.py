"""What InstallDU()/Update() say of the EU beyond the package: ``Resources.``,
``EnvVariable.{i}.`` and ``HostObject.{i}.`` — checked at once (a malformed one fails the
command before anything is journaled) and kept in the EU's record, from which its effective
spec is derived (:mod:`dsm_tr181.containerspec`).

``ApplicationData.{i}.`` rows are parsed here and made volumes by :mod:`.appdata`.
Inputs this device does not act on are refused (7004) rather than accepted with no effect:
``NetworkConfig.PortMapping.{i}.`` and a non-empty ``NetworkConfig.AccessInterfaces``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from dsm_tr181.containerspec.hostobjects import HostObject, check_env, check_syntax
from dsm_tr181.containerspec.resources import Limits
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.appdata import VolumeInput, parse_rows
from dsm_tr181.lcm.records import ExecutionUnitRecord
from dsm_tr181.tree.datamodel import CommandCall

UNSUPPORTED_TABLES = ("NetworkConfig.PortMapping.",)


@dataclass(frozen=True)
class EuInputSettings:
    """The parsed inputs; ``None`` where the command did not give that part (Update keeps it)."""

    resources: Limits | None = None
    env: tuple[tuple[str, str], ...] | None = None
    host_objects: tuple[HostObject, ...] | None = None
    volumes: tuple[VolumeInput, ...] = ()  # ApplicationData.{i}
    retain_data: bool = False  # RetainData (Update, Uninstall)

    def store(self, record: ExecutionUnitRecord) -> None:
        """Write the given parts into ``record``."""
        if self.resources is not None:
            record.resources = {
                "memory_kib": self.resources.memory_kib,
                "cpu_percent": self.resources.cpu_percent,
                "disk_kib": self.resources.disk_kib,
            }
        if self.env is not None:
            record.env = [[key, value] for key, value in self.env]
        if self.host_objects is not None:
            record.host_objects = [
                {"Source": o.source, "Destination": o.destination, "Options": o.options} for o in self.host_objects
            ]


def parse(call: CommandCall) -> EuInputSettings:
    """The EU inputs of an InstallDU() or Update() call; Fault 7004 for what cannot be honoured."""
    args = call.args
    for table in UNSUPPORTED_TABLES:
        if call.rows(table):
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"{table}{{i}} inputs are not supported by this device")
    if args.get("NetworkConfig.AccessInterfaces"):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "NetworkConfig.AccessInterfaces is not supported by this device")
    resources = None
    if any(name.startswith("Resources.") for name in args):
        try:
            resources = Limits(
                memory_kib=int(args.get("Resources.AllocatedMemory", -1)),
                cpu_percent=int(args.get("Resources.AllocatedCPUPercent", -1)),
                disk_kib=int(args.get("Resources.AllocatedDiskSpace", -1)),
            )
        except ValueError as exc:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"Resources: {exc}") from None
    env = None
    env_rows = call.rows("EnvVariable.")
    if env_rows:
        env = tuple((str(row.get("Key", "")), str(row.get("Value", ""))) for row in env_rows)
        check_env(env)
    objects = None
    object_rows = call.rows("HostObject.")
    if object_rows:
        objects = tuple(
            HostObject(str(row.get("Source", "")), str(row.get("Destination", "")), str(row.get("Options", "")))
            for row in object_rows
        )
        check_syntax(objects)
    volumes = parse_rows(call.rows("ApplicationData."))
    return EuInputSettings(resources, env, objects, volumes, bool(args.get("RetainData", False)))


def limits_of(record: ExecutionUnitRecord) -> Limits:
    return Limits(
        memory_kib=int(record.resources.get("memory_kib", -1)),
        cpu_percent=int(record.resources.get("cpu_percent", -1)),
        disk_kib=int(record.resources.get("disk_kib", -1)),
    )


def env_of(record: ExecutionUnitRecord) -> tuple[tuple[str, str], ...]:
    return tuple((str(key), str(value)) for key, value in record.env)


def host_objects_of(record: ExecutionUnitRecord) -> tuple[HostObject, ...]:
    """The record's host objects, device nodes with their type and numbers read on this host."""
    objects = []
    for row in record.host_objects:
        item = HostObject(str(row["Source"]), str(row["Destination"]), str(row.get("Options", "")))
        if item.is_device:
            item = HostObject(item.source, item.destination, item.options, _device(item.source))
        objects.append(item)
    return tuple(objects)


def _device(path: str) -> tuple[str, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(info.st_mode):
        return ("c", os.major(info.st_rdev), os.minor(info.st_rdev))
    if stat.S_ISBLK(info.st_mode):
        return ("b", os.major(info.st_rdev), os.minor(info.st_rdev))
    return None
