"""What each method of ``com.rdkcentral.DSM`` does and what each notification sends.

Everything here runs on the asyncio loop that owns the tree and returns finished
``GLib.Variant`` values: the DataModel hands out read-only views that are valid only
until the tree next changes, so nothing of the tree may leave the loop unconverted.
Get and GetBulk are coroutines (:meth:`DsmService.read`) that return a function instead:
they copy the values on the loop, in slices (:mod:`~dsm_tr181.buses.sliced_read`), and
leave the encoding, which needs no tree, to that function, called off the loop.
Threading is the provider's business (:mod:`dsm_tr181.buses.dbus`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from itertools import islice
from typing import Any, TypeAlias

from dsm_tr181.buses.dbus_bulk import BulkEncoder
from dsm_tr181.buses.dbus_columns import DictionaryEncoder
from dsm_tr181.buses.dbus_errors import fault_text
from dsm_tr181.buses.dbus_supported import supported_dm_json
from dsm_tr181.buses.dbus_variants import (
    ValueEncoder,
    dictionary_reply,
    dictionary_variant,
    to_variant,
    typed_entries,
)
from dsm_tr181.buses.sliced_read import read_copy
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.gi_repository import GLib
from dsm_tr181.schema import BBF_MODEL_URN
from dsm_tr181.schema.model import Object, Parameter
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind, Notification
from dsm_tr181.tree.paths import Name, PathKind, parse_path, schema_path
from dsm_tr181.tree.results import ResolvedObject, combined_fault

_EMPTY = dictionary_variant(())
_FEW = 8  # objects in a Get answered on the loop
_INSTANCE = GLib.VariantType.new("(sa{sv})")
_OPERATED = GLib.VariantType.new("(ssa{sv}is)")

# A method's reply tuple, or a function that builds it off the loop.
Reply: TypeAlias = "GLib.Variant | Callable[[], GLib.Variant]"  # a reply, or one made off the loop


class DsmService:
    """The D-Bus face of one DataModel; call it on the loop only."""

    def __init__(self, dm: DataModel) -> None:
        self._dm = dm
        self._schema = dm.schema
        self._encoder = ValueEncoder()
        self._bulk = BulkEncoder()
        self._columns = DictionaryEncoder()
        self._reads: dict[str, Callable[..., Awaitable[Reply]]] = {"Get": self.get, "GetBulk": self.get_bulk}
        self._methods: dict[str, Callable[..., Reply]] = {
            "GetNames": self.get_names,
            "GetInstances": self.get_instances,
            "GetSupportedDM": self.get_supported_dm,
            "Set": self.set,
            "Add": self.add,
            "Delete": self.delete,
            "Operate": self.operate,
            "OperateEach": self.operate_each,
        }
        self._signals: dict[Kind, Callable[[Notification], tuple[str, GLib.Variant]]] = {
            Kind.VALUE_CHANGE: self._value_change,
            Kind.OBJECT_CREATION: self._object_creation,
            Kind.OBJECT_DELETION: self._object_deletion,
            Kind.EVENT: self._event,
            Kind.OPERATION_COMPLETE: self._operation_complete,
        }

    @property
    def signal_kinds(self) -> set[Kind]:
        """The notification kinds sent as signals (PROGRESS is product-internal)."""
        return set(self._signals)

    def call(self, method: str, args: tuple[Any, ...]) -> Reply:
        """Run ``method`` (a method of the interface) and return its reply tuple, or the
        function that finishes it (call that one off the loop, one call at a time)."""
        return self._methods[method](*args)

    def reads(self, method: str) -> bool:
        """Whether ``method`` is a read of many values, to run with :meth:`read`."""
        return method in self._reads

    async def read(self, method: str, args: tuple[Any, ...]) -> Reply:
        """Run a read method: its reply, or the function that finishes it off the loop."""
        return await self._reads[method](*args)

    def signal(self, note: Notification) -> tuple[str, GLib.Variant]:
        """The signal name and arguments announcing ``note``."""
        return self._signals[note.kind](note)

    # == methods ==============================================================================

    async def get(self, paths: list[str]) -> Reply:
        """The reply, or, for more than a few objects, a function that serialises the
        values copied here (see :mod:`~dsm_tr181.buses.dbus_columns`)."""
        copy = await read_copy(self._dm, paths, 0)
        if len(copy.paths) <= _FEW:  # a few values: quicker done at once than copied
            encode = self._encoder.object_entries
            params = iter(zip(copy.names, copy.values, strict=True))
            return dictionary_reply(
                entry
                for path, schema, size in zip(copy.paths, copy.schemas, copy.sizes, strict=True)
                for entry in encode(path, schema, dict(islice(params, size)))
            )
        return partial(self._columns.reply, copy)

    async def get_bulk(self, paths: list[str], max_depth: int) -> Callable[[], GLib.Variant]:
        """Get's values as one JSON document (see :mod:`~dsm_tr181.buses.dbus_bulk`)."""
        return partial(self._bulk.reply, await read_copy(self._dm, paths, max_depth))

    def get_names(self, path: str, next_level: bool) -> GLib.Variant:
        """Name -> writable; see integration/dbus.md for what each kind of path lists."""
        parsed = parse_path(path)
        names: dict[str, bool] = {}
        if parsed.kind is PathKind.PARAMETER:
            if next_level:
                raise Fault(FaultCode.INVALID_ARGUMENTS, "next_level is for object paths", path)
            for obj in self._resolved([path]):
                _parameter_names(obj, names)
        elif parsed.kind is not PathKind.OBJECT:
            raise Fault(FaultCode.INVALID_PATH, "GetNames takes object or parameter paths", path)
        elif self._dm.schema_object(parsed).multi_instance and isinstance(parsed.segments[-1], Name):
            self._table_names(path, parsed.segments[-1].name, next_level, names)
        elif next_level:
            for obj in self._resolved([path], max_depth=1):
                _parameter_names(obj, names)
                for child_name, child in obj.schema.children.items():
                    names[f"{obj.path}{child_name}."] = child.creatable
        else:
            for obj in self._resolved([path]):
                _object_names(obj, names)
        return GLib.Variant("(a{sb})", (names,))

    def get_instances(self, paths: list[str], first_level_only: bool) -> GLib.Variant:
        rows = [
            GLib.Variant.new_tuple(
                GLib.Variant.new_string(row.path),
                _typed(self._object(row.path).parameters, row.unique_keys),
            )
            for row in self._dm.get_instances(paths, first_level_only)
        ]
        return GLib.Variant.new_tuple(GLib.Variant.new_array(_INSTANCE, rows))

    def get_supported_dm(self, paths: list[str], first_level_only: bool) -> GLib.Variant:
        answer = self._dm.get_supported_dm(paths, first_level_only)
        return GLib.Variant("(s)", (supported_dm_json(answer, BBF_MODEL_URN),))

    def set(self, values: dict[str, Value], allow_partial: bool) -> GLib.Variant:
        """Returns the values as stored; with ``allow_partial``, parameters that failed are
        left out, and only a Set where everything failed is an error."""
        result = self._dm.set(values, allow_partial)
        if result.errors and not result.updated:
            raise combined_fault(result.errors)
        encode = self._encoder.object_entries
        return dictionary_reply(
            entry for obj in result.updated for entry in encode(obj.path, self._object(obj.path), obj.params)
        )

    def add(self, obj: str, params: dict[str, Value]) -> GLib.Variant:
        if parse_path(obj).is_search:
            raise Fault(FaultCode.INVALID_PATH, "Add creates one row: give a table path without wildcards", obj)
        [result] = self._dm.add(obj, params)
        keys = _typed(self._object(result.path).parameters, result.unique_keys)
        return GLib.Variant.new_tuple(GLib.Variant.new_string(result.path), keys)

    def delete(self, paths: list[str]) -> GLib.Variant:
        deleted = [path for result in self._dm.delete(paths) for path in result.deleted]
        return GLib.Variant("(as)", (deleted,))

    def operate(self, command: str, args: dict[str, Value]) -> GLib.Variant:
        result = self._dm.operate_one(command, args)
        if result.request is not None:
            return GLib.Variant.new_tuple(GLib.Variant.new_string(result.request.id), _EMPTY)
        output = self._outputs(result.command, result.outputs or {})
        return GLib.Variant.new_tuple(GLib.Variant.new_string(""), output)

    def operate_each(self, command: str, args: dict[str, Value]) -> GLib.Variant:
        results = [
            GLib.Variant.new_tuple(
                GLib.Variant.new_string(result.command),
                GLib.Variant.new_string(result.request.id if result.request else ""),
                self._outputs(result.command, result.outputs) if result.outputs is not None else _EMPTY,
                GLib.Variant.new_int32(result.fault.code.usp if result.fault else 0),
                GLib.Variant.new_string(fault_text(result.fault) if result.fault else ""),
            )
            for result in self._dm.operate(command, args)
        ]
        return GLib.Variant.new_tuple(GLib.Variant.new_array(_OPERATED, results))

    # == signals ==============================================================================

    def _value_change(self, note: Notification) -> tuple[str, GLib.Variant]:
        parameter = self._schema.parameter(schema_path(note.path))
        assert parameter is not None and note.value is not None
        value = GLib.Variant.new_variant(to_variant(parameter.type, note.value))
        return "ValueChange", GLib.Variant.new_tuple(GLib.Variant.new_string(note.path), value)

    def _object_creation(self, note: Notification) -> tuple[str, GLib.Variant]:
        keys = _typed(self._object(note.path).parameters, note.args)
        return "ObjectCreation", GLib.Variant.new_tuple(GLib.Variant.new_string(note.path), keys)

    def _object_deletion(self, note: Notification) -> tuple[str, GLib.Variant]:
        return "ObjectDeletion", GLib.Variant("(s)", (note.path,))

    def _event(self, note: Notification) -> tuple[str, GLib.Variant]:
        event = self._schema.event(schema_path(note.path))
        assert event is not None
        args = _typed(event.arguments, note.args)
        return "Event", GLib.Variant.new_tuple(GLib.Variant.new_string(note.path), args)

    def _operation_complete(self, note: Notification) -> tuple[str, GLib.Variant]:
        fault = note.fault
        return "OperationComplete", GLib.Variant.new_tuple(
            GLib.Variant.new_string(note.request_id),
            GLib.Variant.new_string(note.path),
            self._outputs(note.path, note.args),
            GLib.Variant.new_int32(fault.code.usp if fault else 0),
            GLib.Variant.new_string(_command_fault_text(fault, note.path) if fault else ""),
        )

    # == helpers ==============================================================================

    def _resolved(self, paths: Iterable[str], max_depth: int = 0) -> list[ResolvedObject]:
        """The objects a Get of ``paths`` answers; the first failing path raises."""
        objects: list[ResolvedObject] = []
        for result in self._dm.get(list(paths), max_depth):
            if result.fault:
                raise result.fault
            objects += result.resolved
        return objects

    def _table_names(self, path: str, table: str, next_level: bool, names: dict[str, bool]) -> None:
        """GetNames of a path ending at a table name: the table(s), then their rows."""
        if next_level:
            deletable = self._dm.schema_object(parse_path(path)).creatable
            for row in self._dm.get_instances([path], first_level_only=True):
                names[row.path] = deletable
            return
        for parent in self._resolved([path[: -len(table) - 1]], max_depth=1):
            names[f"{parent.path}{table}."] = parent.schema.children[table].creatable
        for obj in self._resolved([path]):
            _object_names(obj, names)

    def _object(self, path: str) -> Object:
        return self._schema.objects[schema_path(path)]

    def _outputs(self, command_path: str, outputs: Mapping[str, Value]) -> GLib.Variant:
        command = self._schema.command(schema_path(command_path))
        assert command is not None
        return _typed(command.outputs, outputs)


def _typed(parameters: Mapping[str, Parameter], values: Mapping[str, Value]) -> GLib.Variant:
    """``values`` (relative names, instance numbers in table arguments) as ``a{sv}``."""
    types = {name: parameters[schema_path(name)].type for name in values}
    return dictionary_variant(typed_entries(types, values))


def _command_fault_text(fault: Fault, command: str) -> str:
    """An asynchronous command's fault text, naming the command when the handler's fault
    names no path (the DataModel passes it on as raised). The fault is shared with the
    other subscribers, so it is copied rather than changed."""
    if fault.path:
        return fault_text(fault)
    named = Fault(fault.code, fault.message, command)
    named.details = fault.details
    return fault_text(named)


def _parameter_names(obj: ResolvedObject, names: dict[str, bool]) -> None:
    for name in obj.params:
        names[obj.path + name] = obj.schema.parameters[name].writable


def _object_names(obj: ResolvedObject, names: dict[str, bool]) -> None:
    """The object (writable: a row a controller may delete), its parameters and its tables."""
    names[obj.path] = obj.schema.creatable
    _parameter_names(obj, names)
    for child_name, child in obj.schema.children.items():
        if child.multi_instance:
            names[f"{obj.path}{child_name}."] = child.creatable
