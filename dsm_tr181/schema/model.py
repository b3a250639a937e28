"""The supported data model as plain objects named with TR-106 words.

Built by :mod:`dsm_tr181.schema.loader` from BBF XML; nothing else here knows XML.
Paths are schema paths: tables appear as ``{i}`` (``Device.SoftwareModules.ExecEnv.{i}.``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dsm_tr181.schema.types import DataType, Value


class Access(enum.Enum):
    READ_ONLY = "readOnly"
    READ_WRITE = "readWrite"
    WRITE_ONCE_READ_ONLY = "writeOnceReadOnly"


@dataclass(frozen=True)
class UniqueKey:
    parameters: tuple[str, ...]
    functional: bool = True


@dataclass
class Parameter:
    """A parameter of an object, or an argument of a command or event."""

    name: str  # relative name; for arguments may contain a sub-object ("Fault.FaultCode")
    path: str  # full schema path (for arguments: "Device.SoftwareModules.InstallDU().URL")
    type: DataType
    access: Access = Access.READ_ONLY
    default: str | None = None  # TR-106 text of the object/parameter default, if any
    hidden: bool = False  # value never returned by a get
    secured: bool = False  # value never returned by a get (TR-106 2.x "secured")
    command: bool = False  # a CWMP "command" parameter: setting it triggers an action; reads give the null value
    mandatory: bool = False  # arguments only
    status: str = "current"
    version: str = ""

    @property
    def writable(self) -> bool:
        """A controller may Set it (writeOnceReadOnly ones are set only when their row is added)."""
        return self.access is Access.READ_WRITE

    @property
    def concealed(self) -> bool:
        """Reads return the type's null value, never the stored one."""
        return self.hidden or self.secured or self.command

    def default_value(self) -> Value:
        return self.type.parse(self.default) if self.default is not None else self.type.default_value()


@dataclass
class ArgumentObject:
    """A sub-object of a command's input/output or of an event ("AutoRestart.", "HostObject.{i}.")."""

    name: str
    multi_instance: bool
    min_entries: int = 0
    max_entries: int | None = None


@dataclass
class Command:
    name: str  # "InstallDU()"
    path: str  # "Device.SoftwareModules.InstallDU()"
    is_async: bool
    inputs: dict[str, Parameter] = field(default_factory=dict)  # relative names, "{i}" in tables
    outputs: dict[str, Parameter] = field(default_factory=dict)
    input_objects: dict[str, ArgumentObject] = field(default_factory=dict)
    output_objects: dict[str, ArgumentObject] = field(default_factory=dict)
    status: str = "current"
    version: str = ""


@dataclass
class Event:
    name: str  # "DUStateChange!"
    path: str
    arguments: dict[str, Parameter] = field(default_factory=dict)
    objects: dict[str, ArgumentObject] = field(default_factory=dict)
    status: str = "current"
    version: str = ""


@dataclass
class Object:
    path: str  # "Device.SoftwareModules.DeploymentUnit.{i}."
    access: Access = Access.READ_ONLY  # readWrite: a controller may Add/Delete rows
    min_entries: int = 1
    max_entries: int | None = 1  # None: unbounded
    unique_keys: tuple[UniqueKey, ...] = ()
    enable_parameter: str = ""
    num_entries_parameter: str = ""  # name of the parent's NumberOfEntries parameter
    parameters: dict[str, Parameter] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    children: dict[str, Object] = field(default_factory=dict)  # child name ("ExecEnv") -> object
    parent: Object | None = field(default=None, repr=False)
    status: str = "current"
    version: str = ""

    @property
    def multi_instance(self) -> bool:
        return self.path.endswith(".{i}.")

    @property
    def name(self) -> str:
        """The object's own name: "DeploymentUnit" for "...DeploymentUnit.{i}."."""
        parts = self.path.rstrip(".").split(".")
        return parts[-2] if self.multi_instance else parts[-1]

    @property
    def table_path(self) -> str:
        """The path without the trailing "{i}." ("Device.SoftwareModules.DeploymentUnit.")."""
        return self.path[: -len("{i}.")] if self.multi_instance else self.path

    @property
    def creatable(self) -> bool:
        return self.multi_instance and self.access is Access.READ_WRITE

    def key_parameters(self) -> list[str]:
        """Every parameter that takes part in a unique key, in definition order."""
        names: list[str] = []
        for key in self.unique_keys:
            names += [n for n in key.parameters if n not in names]
        return names


@dataclass
class Schema:
    """The whole supported data model."""

    spec: str
    model: str
    objects: dict[str, Object]  # schema path -> object, in document order
    data_types: dict[str, DataType]

    @property
    def root(self) -> Object:
        return next(iter(self.objects.values()))

    def parameter(self, path: str) -> Parameter | None:
        obj_path, _, name = path.rpartition(".")
        obj = self.objects.get(obj_path + ".")
        return obj.parameters.get(name) if obj else None

    def command(self, path: str) -> Command | None:
        obj_path, _, name = path.rpartition(".")
        obj = self.objects.get(obj_path + ".")
        return obj.commands.get(name) if obj else None

    def event(self, path: str) -> Event | None:
        obj_path, _, name = path.rpartition(".")
        obj = self.objects.get(obj_path + ".")
        return obj.events.get(name) if obj else None

    def counts(self) -> dict[str, int]:
        objs = self.objects.values()
        return {
            "objects": len(self.objects),
            "parameters": sum(len(o.parameters) for o in objs),
            "commands": sum(len(o.commands) for o in objs),
            "events": sum(len(o.events) for o in objs),
        }
