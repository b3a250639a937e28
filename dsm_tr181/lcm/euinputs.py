"""What InstallDU()/Update() say of the EU beyond the package: ``Resources.``,
``EnvVariable.{i}.`` and ``HostObject.{i}.`` — checked at once (a malformed one fails the
command before anything is journaled) and kept in the EU's record, from which its effective
spec is derived (:mod:`dsm_tr181.containerspec`).

``ApplicationData.{i}.`` rows are parsed here and made volumes by :mod:`.appdata`.
``NetworkConfig.ShareParentNetwork`` / ``X_RDKCENTRAL-COM_NetworkMode`` choose the EU's network
mode and ``NetworkConfig.PortMapping.{i}.`` rows need a bridged one (see :mod:`.networking`).

``NetworkConfig.AccessInterfaces``: TR-181 has the command fail when an interface named is not
in the ExecEnv's ``AvailableAccessInterfaces`` — a list of strong references to
``Device.IP.Interface`` rows, which this product does not serve, so it is empty on every
ExecEnv. An empty (or absent) list is accepted; a non-empty one fails with 7225 (the DU needs
what its ExecEnv does not make available), naming why — unless the EU shares its ExecEnv's
network, where 2.20 says AccessInterfaces is ignored.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from dsm_tr181.containerspec.hostobjects import HostObject, check_env, check_syntax
from dsm_tr181.containerspec.resources import Limits
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.appdata import VolumeInput, parse_rows
from dsm_tr181.lcm.networking import MODES, SHARE_PARENT
from dsm_tr181.lcm.records import ExecutionUnitRecord
from dsm_tr181.lcm.tables import as_int
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import CommandCall


@dataclass(frozen=True)
class EuInputSettings:
    """The parsed inputs; ``None`` where the command did not give that part (Update keeps it)."""

    resources: Limits | None = None
    env: tuple[tuple[str, str], ...] | None = None
    host_objects: tuple[HostObject, ...] | None = None
    volumes: tuple[VolumeInput, ...] = ()  # ApplicationData.{i}
    port_mappings: list[dict[str, Any]] | None = None  # NetworkConfig.PortMapping.{i}
    retain_data: bool = False  # RetainData (Update, Uninstall)
    network_mode: str | None = None  # Bridged / None / ShareParent; "" = the ExecEnv's default

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
        if self.network_mode is not None:
            record.network_mode = self.network_mode
        if self.port_mappings is not None:
            record.port_mappings = [dict(m) for m in self.port_mappings]
        if self.host_objects is not None:
            record.host_objects = [
                {"Source": o.source, "Destination": o.destination, "Options": o.options} for o in self.host_objects
            ]


MODE_INPUT = "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode"


def parse(call: CommandCall) -> EuInputSettings:
    """The EU inputs of an InstallDU() or Update() call; Fault 7004 for what cannot be honoured."""
    args = call.args
    network_mode = _network_mode(args)
    interfaces = args.get("NetworkConfig.AccessInterfaces")
    if interfaces and network_mode != SHARE_PARENT:
        names = ", ".join(map(str, interfaces)) if isinstance(interfaces, (list, tuple)) else str(interfaces)
        raise Fault(
            FaultCode.DU_EE_MISMATCH,
            f"NetworkConfig.AccessInterfaces {names}: not in the ExecEnv's AvailableAccessInterfaces, which is "
            "empty (this device serves no Device.IP.Interface rows to reference)",
        )
    resources = None
    if any(name.startswith("Resources.") for name in args):
        try:
            resources = Limits(
                memory_kib=as_int(args.get("Resources.AllocatedMemory", -1)),
                cpu_percent=as_int(args.get("Resources.AllocatedCPUPercent", -1)),
                disk_kib=as_int(args.get("Resources.AllocatedDiskSpace", -1)),
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
    mappings = _port_mappings(call.rows("NetworkConfig.PortMapping.")) or None
    retain = bool(args.get("RetainData", False))
    return EuInputSettings(resources, env, objects, volumes, mappings, retain, network_mode)


def _network_mode(args: dict[str, Value]) -> str | None:
    """The mode the inputs ask for: None when they say nothing (Update keeps the EU's);
    "" for ShareParentNetwork false alone (the ExecEnv's default); 7004 when they disagree."""
    mode, share = args.get(MODE_INPUT), args.get("NetworkConfig.ShareParentNetwork")
    if mode is not None and str(mode) not in MODES:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{MODE_INPUT} {mode!r}: one of {', '.join(MODES)}")
    if share is True and mode not in (None, SHARE_PARENT):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"ShareParentNetwork true but {MODE_INPUT} {mode!s}")
    if share is False and mode == SHARE_PARENT:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"ShareParentNetwork false but {MODE_INPUT} {mode!s}")
    if mode is not None:
        return str(mode)
    if share is None:
        return None
    return SHARE_PARENT if share else ""


def _port_mappings(rows: list[dict[str, Value]]) -> list[dict[str, Any]]:
    mappings = []
    for row in rows:
        protocol = str(row.get("Protocol", "")).upper()
        external, internal = as_int(row.get("ExternalPort", 0)), as_int(row.get("InternalPort", 0))
        if protocol not in ("TCP", "UDP") or not 0 < external < 65536 or not 0 < internal < 65536:
            raise Fault(
                FaultCode.INVALID_ARGUMENTS,
                f"PortMapping {protocol} {external}->{internal}: TCP or UDP, ports 1..65535",
            )
        mappings.append({"Protocol": protocol, "ExternalPort": external, "InternalPort": internal,
                         "Interface": str(row.get("Interface", ""))})  # fmt: skip
    if len({(m["Protocol"], m["ExternalPort"]) for m in mappings}) != len(mappings):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "two PortMapping inputs have the same Protocol and ExternalPort")
    return mappings


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
