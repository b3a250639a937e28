"""The USP GetSupportedDM answer (TR-369 §7.5.3), computed from the schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.model import Command, Event, Object, Parameter, Schema
from dsm_tr181.schema.types import BaseType, DataType

# USP ParamValueType names (usp-msg-1-4.proto).
VALUE_TYPES = {
    BaseType.STRING: "PARAM_STRING",
    BaseType.BOOLEAN: "PARAM_BOOLEAN",
    BaseType.INT: "PARAM_INT",
    BaseType.UNSIGNED_INT: "PARAM_UNSIGNED_INT",
    BaseType.LONG: "PARAM_LONG",
    BaseType.UNSIGNED_LONG: "PARAM_UNSIGNED_LONG",
    BaseType.DATETIME: "PARAM_DATE_TIME",
    BaseType.BASE64: "PARAM_BASE_64",
    BaseType.HEX_BINARY: "PARAM_HEX_BINARY",
}


@dataclass
class SupportedParam:
    name: str
    access: str  # PARAM_READ_ONLY / PARAM_READ_WRITE
    value_type: str
    type: DataType  # the full TR-106 type (facets), beyond what USP carries
    # USP 1.2+ SupportedParamResult.value_change: a ValueChange subscription is honoured, or
    # the value moves without notifications (computed on read, sampled quietly)
    value_change: str = "VALUE_CHANGE_ALLOWED"


@dataclass
class SupportedCommand:
    name: str
    command_type: str  # CMD_SYNC / CMD_ASYNC
    input_args: list[SupportedParam]
    output_args: list[SupportedParam]


@dataclass
class SupportedEvent:
    name: str
    args: list[SupportedParam]


@dataclass
class SupportedObject:
    path: str
    access: str  # OBJ_READ_ONLY / OBJ_ADD_DELETE
    is_multi_instance: bool
    params: list[SupportedParam] = field(default_factory=list)
    commands: list[SupportedCommand] = field(default_factory=list)
    events: list[SupportedEvent] = field(default_factory=list)
    unique_key_sets: list[list[str]] = field(default_factory=list)


def supported_dm(
    schema: Schema,
    path: str,
    first_level_only: bool = False,
    commands: bool = True,
    events: bool = True,
    params: bool = True,
    unannounced: frozenset[str] = frozenset(),
) -> list[SupportedObject]:
    """Objects at and below ``path`` ("Device.SoftwareModules.", "{i}" or instance numbers);
    ``unannounced``: schema paths of parameters whose changes are never notified."""
    generic = ".".join("{i}" if p.isdigit() or p == "*" else p for p in path.split("."))
    if not generic.endswith("."):
        leaf_obj, _, leaf = generic.rpartition(".")
        obj = schema.objects.get(leaf_obj + ".")
        if obj is None or not (leaf in obj.parameters or leaf in obj.commands or leaf in obj.events):
            raise Fault(FaultCode.INVALID_PATH, "not in the supported data model", path)
        return [_describe(obj, commands and leaf in obj.commands, events and leaf in obj.events,
                          params and leaf in obj.parameters, unannounced, only=leaf)]  # fmt: skip
    start = schema.objects.get(generic) or schema.objects.get(generic + "{i}.")  # a table named without {i}
    if start is None:
        raise Fault(FaultCode.INVALID_PATH, "not in the supported data model", path)
    if first_level_only:  # TR-369: the child objects, without their parameters, commands or events
        children = [_describe(child, False, False, False, unannounced) for child in start.children.values()]
        return [_describe(start, commands, events, params, unannounced), *children]
    found = [start] + [o for p, o in schema.objects.items() if p.startswith(start.path) and p != start.path]
    return [_describe(obj, commands, events, params, unannounced) for obj in found]


def _describe(
    obj: Object, commands: bool, events: bool, params: bool, unannounced: frozenset[str], only: str = ""
) -> SupportedObject:
    result = SupportedObject(
        path=obj.path,
        access="OBJ_ADD_DELETE" if obj.creatable else "OBJ_READ_ONLY",
        is_multi_instance=obj.multi_instance,
        unique_key_sets=[list(k.parameters) for k in obj.unique_keys],
    )
    if params:
        result.params = [
            _param(p, obj.path + n in unannounced) for n, p in obj.parameters.items() if not only or n == only
        ]
    if commands:
        result.commands = [_command(c) for n, c in obj.commands.items() if not only or n == only]
    if events:
        result.events = [_event(e) for n, e in obj.events.items() if not only or n == only]
    return result


def _param(parameter: Parameter, unannounced: bool = False) -> SupportedParam:
    access = "PARAM_READ_WRITE" if parameter.writable else "PARAM_READ_ONLY"
    change = "VALUE_CHANGE_WILL_IGNORE" if unannounced else "VALUE_CHANGE_ALLOWED"
    return SupportedParam(parameter.name, access, VALUE_TYPES[parameter.type.base], parameter.type, change)


def _command(command: Command) -> SupportedCommand:
    return SupportedCommand(
        command.name,
        "CMD_ASYNC" if command.is_async else "CMD_SYNC",
        [_param(p) for p in command.inputs.values()],
        [_param(p) for p in command.outputs.values()],
    )


def _event(event: Event) -> SupportedEvent:
    return SupportedEvent(event.name, [_param(p) for p in event.arguments.values()])
