"""The instance tree and the operations API every front end uses.

Controller operations (``get``, ``get_instances``, ``set``, ``add``, ``delete``,
``operate``) enforce the supported data model: access, types, unique keys, references.
The product's own code uses the internal API (``add_row``, ``delete_row``, ``update``,
``emit_event``), which may write read-only parameters but still checks types and keys.
Behaviour is attached with ``on_get`` (computed values), ``on_set`` (validation and
side effects of controller writes) and ``on_command`` (command handlers).

All calls must come from one thread (the daemon's asyncio loop); asynchronous commands
need that loop to be running.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.flavours import Flavour, flavoured, lacking_parameters
from dsm_tr181.schema.model import Access, Command, Object, Parameter, Schema
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.nodes import Node, Table
from dsm_tr181.tree.notifications import Kind, Notification, Notifications, Subscription
from dsm_tr181.tree.paths import Name, Path, PathKind, parse_path, schema_path
from dsm_tr181.tree.references import References
from dsm_tr181.tree.resolve import Resolver
from dsm_tr181.tree.results import (
    AddResult,
    DeleteResult,
    GetPathResult,
    InstanceResult,
    OperateResult,
    ParamError,
    Request,
    RequestState,
    ResolvedObject,
    SetResult,
    UpdatedObject,
    combined_fault,
)
from dsm_tr181.tree.supported import SupportedObject, supported_dm

log = logging.getLogger(__name__)

Getter = Callable[[Node], Value]
Validator = Callable[[Node, Value], None]
Applier = Callable[[Node, Value, Value], None]
CommandHandler = Callable[["CommandCall"], "Mapping[str, Value] | Awaitable[Mapping[str, Value]]"]


@dataclass
class CommandCall:
    """What a command handler receives: the object instance, typed input args, the request."""

    node: Node
    command: Command
    args: dict[str, Value]  # relative names, instance numbers in table arguments
    command_key: str = ""
    request_id: str = ""  # asynchronous commands only

    def rows(self, table: str) -> list[dict[str, Value]]:
        """Arguments of a table argument ("HostObject.") grouped by instance, in order."""
        grouped: dict[int, dict[str, Value]] = {}
        for name, value in self.args.items():
            if name.startswith(table):
                number, _, rel = name[len(table) :].partition(".")
                grouped.setdefault(int(number), {})[rel] = value
        return [grouped[n] for n in sorted(grouped)]


class DataModel:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.notifications = Notifications()
        self.references = References(self)
        self._resolver = Resolver(self)
        self._index: dict[str, Node] = {}  # instantiated object path (with dot) -> node
        # Moves with every change a get could see (values, rows): a read made in slices is
        # consistent when it is the same at its end as at its start. One counter for the
        # tree and its views (view() copies this object, not the counter).
        self._changes = _Changes()
        self._defaults: dict[str, dict[str, Value]] = {}
        self._getters: dict[str, Getter] = {}  # schema parameter path -> getter
        self._special: dict[str, list[tuple[str, Getter]]] = {}
        self._validators: dict[str, Validator] = {}
        self._appliers: dict[str, Applier] = {}
        self._commands: dict[str, CommandHandler] = {}
        self.unannounced: set[str] = set()  # schema parameter paths never in a ValueChange
        self.requests: dict[str, Request] = {}
        self._request_ids = itertools.count(1)
        self.root = self._new_node(schema.root, schema.root.path, None)
        for node in self.root.walk():
            self._index[node.path] = node
        # The parameters a view() of one flavour does not serve: schema paths, and names per
        # schema object path (both empty for the whole model).
        self.unserved: frozenset[str] = frozenset()
        self._unserved_params: dict[str, frozenset[str]] = {}

    @property
    def generation(self) -> int:
        """Moves with every change a get could see (see ``_changes``)."""
        return self._changes.count

    def view(self, flavour: Flavour) -> DataModel:
        """This tree as a front end serving ``flavour`` sees it (see schema/flavours.py): the
        same instances, hooks, requests and notifications, with ``schema`` reduced to what the
        flavour defines. Controller operations treat the other parameters as outside the
        supported data model (7026), Gets leave them out, and the view's subscribers get no
        ValueChange of them."""
        if flavour is Flavour.BOTH:
            return self
        view = copy.copy(self)  # shares every table and hook of this tree
        view.schema = flavoured(self.schema, flavour)
        view.unserved = lacking_parameters(flavour) & {
            path + name for path, obj in self.schema.objects.items() for name in obj.parameters
        }
        view._unserved_params = {
            path: frozenset(set(obj.parameters) - set(view.schema.objects[path].parameters))
            for path, obj in self.schema.objects.items()
            if len(obj.parameters) != len(view.schema.objects[path].parameters)
        }
        view._resolver = Resolver(view)
        return view

    # == hooks ============================================================================

    def on_get(self, path: str, getter: Getter) -> None:
        """Compute parameter ``path`` (schema path, "{i}" for rows) when it is read."""
        self._schema_param(path)
        self._getters[path] = getter
        self._special.clear()
        self.unannounced.add(path)  # computed on read: no ValueChange

    def never_announced(self, path: str) -> None:
        """Parameter ``path`` (schema path) changes without notifications (sampled quietly):
        GetSupportedDM says VALUE_CHANGE_WILL_IGNORE."""
        self._schema_param(path)
        self.unannounced.add(path)

    def on_set(self, path: str, validate: Validator | None = None, apply: Applier | None = None) -> None:
        """Check (``validate``, raise Fault to refuse) and act on (``apply``) controller writes."""
        self._schema_param(path)
        if validate:
            self._validators[path] = validate
        if apply:
            self._appliers[path] = apply

    def on_command(self, path: str, handler: CommandHandler) -> None:
        if self.schema.command(path) is None:
            raise KeyError(f"{path} is not a command of the supported data model")
        self._commands[path] = handler

    # == internal API =======================================================================

    def nodes(self) -> list[Node]:
        """Every object instance of the tree (a snapshot list)."""
        return list(self._index.values())

    def find_node(self, path: str) -> Node | None:
        """The node at a concrete object path (with or without the trailing dot), or None."""
        node = self._index.get(path if path.endswith(".") else path + ".")
        if node is None and "[" in path:
            try:
                nodes, _ = self._resolver.objects(parse_path(path if path.endswith(".") else path + "."))
            except Fault:
                return None
            node = nodes[0] if len(nodes) == 1 else None
        return node

    def node(self, path: str) -> Node:
        node = self.find_node(path)
        if node is None:
            raise Fault(FaultCode.OBJECT_NOT_FOUND, "no such object", path)
        return node

    def table(self, path: str) -> Table:
        """The table at "Device.SoftwareModules.DeploymentUnit." (parent instances concrete)."""
        parent_path, _, name = path.rstrip(".").rpartition(".")
        parent = self.node(parent_path)
        try:
            return parent.tables[name]
        except KeyError:
            raise Fault(FaultCode.NOT_A_TABLE, "not a table", path) from None

    def read(self, node: Node, name: str) -> Value:
        """A parameter's current value (computed ones included), concealed ones too."""
        getter = self._getters.get(node.schema.path + name)
        return getter(node) if getter else node.values[name]

    def parameter(self, path: str) -> Parameter:
        """The definition of a parameter, command argument or event argument named by a
        concrete path ("Device.SoftwareModules.DeploymentUnit.3.Status",
        "Device.SoftwareModules.InstallDU().URL", "Device.SoftwareModules.DUStateChange!.UUID")."""
        generic = schema_path(path)
        args: Mapping[str, Parameter] | None = None
        if "()." in generic:
            owner, _, name = generic.partition("().")
            command = self.schema.command(owner + "()")
            args = {**command.inputs, **command.outputs} if command else {}
        elif "!." in generic:
            owner, _, name = generic.partition("!.")
            event = self.schema.event(owner + "!")
            args = event.arguments if event else {}
        found = args.get(name) if args is not None else self.schema.parameter(generic)
        if found is None:
            raise Fault(FaultCode.INVALID_PATH, "not in the supported data model", path)
        return found

    def text(self, path: str, value: Value) -> str:
        """A value of the parameter or argument at ``path`` in its TR-106 text encoding."""
        return self.parameter(path).type.format(value)

    def value(self, path: str) -> Value:
        obj, _, name = path.rpartition(".")
        node = self.node(obj)
        if name not in node.schema.parameters:
            raise Fault(FaultCode.INVALID_PATH, "no such parameter", path)
        return self.read(node, name)

    def add_row(self, table_path: str, values: Mapping[str, Value] | None = None, number: int | None = None) -> Node:
        """Create a row as the product's own code; Alias defaults to "cpe-<n>"."""
        table = self.table(table_path)
        row = self._create_row(table, number)
        try:
            for name, value in (values or {}).items():
                parameter = self._parameter(row.schema, name, row.path)
                if value == row.values[name] and type(value) is type(row.values[name]):
                    continue  # already the (valid) default
                row.values[name] = self.references.validate(row, parameter, parameter.type.check(value))
            self._assign_alias(table, row)
            self._attach_row(table, row)
        except Fault as fault:
            raise fault.at(row.path) from None
        return row

    def delete_row(self, target: Node | str) -> None:
        row = target if isinstance(target, Node) else self.node(target)
        parent = row.parent
        if parent is None or not row.schema.multi_instance:
            raise Fault(FaultCode.NOT_A_TABLE, "only table rows can be deleted", row.path)
        table = parent.tables[row.schema.name]
        gone = list(row.walk())
        for node in reversed(gone):
            del self._index[node.path]
            if node is not row and node.schema.multi_instance:
                node.parent.tables[node.schema.name].unindex(node)  # type: ignore[union-attr]
        table.unindex(row)
        del table.rows[row.number]
        self._changes.count += 1
        for node in reversed(gone):
            if node.schema.multi_instance:
                self.notifications.publish(Notification(Kind.OBJECT_DELETION, node.path))
        self._count(table)
        self.references.drop_targets(gone)

    def update(self, target: Node | str, values: Mapping[str, Value], quiet: bool = False) -> None:
        """Write parameters as the product's own code (read-only ones included), atomically.

        ``quiet`` skips ValueChange notifications (for sampled measurements such as
        MemoryInUse, which would otherwise flood subscribers)."""
        node = target if isinstance(target, Node) else self.node(target)
        checked: dict[str, Value] = {}
        try:
            for name, value in values.items():
                parameter = self._parameter(node.schema, name, node.path)
                checked[name] = self.references.validate(node, parameter, parameter.type.check(value))
            self._check_keys({node: checked})
        except Fault as fault:
            raise fault.at(node.path) from None
        self._commit(node, checked, notify=not quiet)

    def emit_event(self, path: str, args: Mapping[str, Value], request_id: str = "") -> None:
        """Publish an event ("Device.SoftwareModules.DUStateChange!") with typed arguments;
        ``request_id`` names the asynchronous command it concludes, if any."""
        obj_path, _, name = path.rpartition(".")
        node = self.node(obj_path)
        event = node.schema.events.get(name)
        if event is None:
            raise Fault(FaultCode.INVALID_PATH, "no such event", path)
        checked: dict[str, Value] = {}
        for arg_name, arg in event.arguments.items():
            value = args.get(arg_name)
            checked[arg_name] = arg.type.check(value) if value is not None else arg.default_value()
        unknown = set(args) - set(event.arguments)
        if unknown:
            raise Fault(FaultCode.INTERNAL_ERROR, f"unknown event arguments {sorted(unknown)}", path)
        self.notifications.publish(Notification(Kind.EVENT, path, args=checked, request_id=request_id))

    def subscribe(
        self,
        callback: Callable[[Notification], None],
        kinds: set[Kind] | None = None,
        prefix: str = "",
        durable: bool = False,
    ) -> Subscription:
        if self.unserved:
            callback = partial(_served_only, self.unserved, callback)
        return self.notifications.subscribe(callback, kinds, prefix, durable)

    # == controller operations ================================================================

    def get(self, paths: Sequence[str], max_depth: int = 0) -> list[GetPathResult]:
        """USP Get: one result per requested path; a failing path carries its fault."""
        results = []
        for requested in paths:
            result = GetPathResult(requested)
            try:
                result.resolved = self._get_one(parse_path(requested), max_depth)
            except Fault as fault:
                if fault.code is FaultCode.OBJECT_NOT_FOUND:  # R-GET.0
                    fault = Fault(FaultCode.INVALID_PATH, fault.message, fault.path or requested)
                result.fault = fault.at(requested)
            results.append(result)
        return results

    def iter_get(self, paths: Sequence[str], max_depth: int = 0) -> Iterator[ResolvedObject]:
        """Get's objects one at a time, path after path; a failing path raises its fault
        (as :meth:`get` reports it) when the walk reaches it. The walk reads the live tree:
        resume it only while ``generation`` has not moved."""
        for requested in paths:
            try:
                path = parse_path(requested)
                if path.kind is PathKind.OBJECT:
                    nodes, _ = self._resolver.objects(path)
                    walks: Iterable[ResolvedObject] = (o for start in nodes for o in self._walk(start, max_depth))
                else:
                    walks = self._get_one(path, max_depth)
            except Fault as fault:
                if fault.code is FaultCode.OBJECT_NOT_FOUND:  # R-GET.0
                    fault = Fault(FaultCode.INVALID_PATH, fault.message, fault.path or requested)
                raise fault.at(requested) from None
            yield from walks

    def get_values(self, paths: Sequence[str], max_depth: int = 0) -> dict[str, Value]:
        """Get flattened to full parameter path -> value; the first failing path raises."""
        flat: dict[str, Value] = {}
        for result in self.get(paths, max_depth):
            if result.fault:
                raise result.fault
            for obj in result.resolved:
                for name, value in obj.params.items():
                    flat[obj.path + name] = value
        return flat

    def get_instances(self, paths: Sequence[str], first_level_only: bool = False) -> list[InstanceResult]:
        found: list[InstanceResult] = []
        for requested in paths:
            path = parse_path(requested)
            if path.kind is not PathKind.OBJECT:
                raise Fault(FaultCode.INVALID_PATH, "GetInstances takes object paths", requested)
            if not self.schema_object(path).multi_instance:  # TR-369: 7018 "Object is not a table"
                raise Fault(FaultCode.NOT_A_TABLE, "GetInstances takes paths to multi-instance objects", requested)
            nodes, tables = self._resolver.objects(path, expand_table=False)
            starts = [row for t in tables for row in t.rows.values()] if tables else nodes
            if tables and first_level_only:
                candidates: Iterable[Node] = starts
            elif first_level_only:
                candidates = (row for n in starts for t in n.tables.values() for row in t.rows.values())
            else:
                candidates = (node for start in starts for node in start.walk())
            found += [
                InstanceResult(n.path, {k: n.values[k] for k in n.schema.key_parameters()})
                for n in candidates
                if n.schema.multi_instance
            ]
        return found

    def get_supported_dm(
        self,
        paths: Sequence[str],
        first_level_only: bool = False,
        commands: bool = True,
        events: bool = True,
        params: bool = True,
    ) -> dict[str, list[SupportedObject]]:
        """USP GetSupportedDM: requested path -> supported objects at and below it."""
        quiet = frozenset(self.unannounced)
        return {p: supported_dm(self.schema, p, first_level_only, commands, events, params, quiet) for p in paths}

    def set(self, updates: Mapping[str, Value], allow_partial: bool = False) -> SetResult:
        """USP Set of parameter paths (search paths allowed) to text or typed values.

        Without ``allow_partial`` all updates apply or none does (any failure raises,
        listing every failed parameter in ``fault.details``). With it, each requested
        object path stands alone and its failures are returned.
        """
        groups: dict[str, list[tuple[Node, Parameter, Value, str]]] = {}
        errors: list[ParamError] = []
        for requested, raw in updates.items():
            try:
                groups[requested] = self._plan_set(requested, raw)
            except Fault as fault:
                errors.append(ParamError(requested, fault.at(requested)))
        if not allow_partial and not errors:
            groups = {"": [step for plan in groups.values() for step in plan]}
        for key in list(groups):
            try:
                self._check_keys(_changes(groups[key]))
            except Fault as fault:
                errors.append(ParamError(key or next(iter(updates)), fault))
                del groups[key]
        if errors and not allow_partial:
            raise combined_fault(errors)
        result = SetResult(errors=errors)
        applied: list[tuple[Node, dict[str, Value]]] = []
        for plan in groups.values():
            try:
                applied += self._apply_group(plan)
            except Fault as fault:
                if not allow_partial:
                    for node, old in reversed(applied):
                        self._commit(node, old, notify=False)
                    raise
                result.errors.append(ParamError(plan[0][3], fault))
        for node, old in applied:
            result.updated.append(UpdatedObject(node.path, {name: self._shown(node, name) for name in old}))
        return result

    def add(
        self, obj_path: str, params: Mapping[str, Value] | None = None, allow_partial: bool = False
    ) -> list[AddResult]:
        """USP Add of one row to each table ``obj_path`` selects."""
        path = parse_path(obj_path)
        if path.kind is not PathKind.OBJECT:
            raise Fault(FaultCode.INVALID_PATH, "Add takes an object path", obj_path)
        _, tables = self._resolver.objects(path, expand_table=False)
        if not tables:
            schema = self.schema_object(path)
            code = FaultCode.NOT_CREATABLE if schema.multi_instance else FaultCode.NOT_A_TABLE
            raise Fault(code, "not a table path (a table name must end the path)", obj_path)
        results: list[AddResult] = []
        for table in tables:
            result = AddResult(obj_path)
            try:
                row = self._add_controller_row(table, params or {})
                result.path = row.path
                result.unique_keys = {k: row.values[k] for k in row.schema.key_parameters()}
            except Fault as fault:
                if not allow_partial:
                    for done in results:
                        self.delete_row(done.path)
                    raise
                result.fault = fault
            results.append(result)
        return results

    def delete(self, obj_paths: Sequence[str], allow_partial: bool = False) -> list[DeleteResult]:
        plans: list[tuple[DeleteResult, list[Node]]] = []
        for requested in obj_paths:
            result = DeleteResult(requested)
            try:
                path = parse_path(requested)
                if path.kind is not PathKind.OBJECT:
                    raise Fault(FaultCode.INVALID_PATH, "Delete takes object instance paths", requested)
                nodes, tables = self._resolver.objects(path, expand_table=False)
                if tables or any(not n.schema.multi_instance for n in nodes):
                    raise Fault(FaultCode.NOT_A_TABLE, "not an object instance path", requested)
                for node in nodes:
                    if not node.schema.creatable:
                        raise Fault(FaultCode.DELETE_FAILURE, "rows of this table cannot be deleted", node.path)
                plans.append((result, nodes))
            except Fault as fault:
                if not allow_partial:
                    raise
                result.fault = fault.at(requested)
                plans.append((result, []))
        for result, nodes in plans:
            for node in nodes:
                if node.path in self._index:
                    self.delete_row(node)
                    result.deleted.append(node.path)
        return [result for result, _ in plans]

    def operate(
        self, command_path: str, args: Mapping[str, Value] | None = None, command_key: str = ""
    ) -> list[OperateResult]:
        """USP Operate: one request per object the path matches (R-OPR.2); per-object
        failures are returned, not raised (R-OPR.1)."""
        targets = self._command_targets(command_path)
        return [self._operate_one(node, name, args or {}, command_key) for node, name in targets]

    def operate_one(
        self, command_path: str, args: Mapping[str, Value] | None = None, command_key: str = ""
    ) -> OperateResult:
        """Operate on exactly one object (nothing runs when the path matches another number
        of objects); its fault is raised."""
        targets = self._command_targets(command_path)
        if len(targets) != 1:
            raise Fault(FaultCode.INVALID_PATH, f"{len(targets)} objects match; exactly one expected", command_path)
        result = self._operate_one(*targets[0], args or {}, command_key)
        if result.fault:
            raise result.fault
        return result

    def _command_targets(self, command_path: str) -> list[tuple[Node, str]]:
        path = parse_path(command_path)
        if path.kind is not PathKind.COMMAND:
            raise Fault(FaultCode.INVALID_PATH, "not a command path (it must end with '()')", command_path)
        targets = self._resolver.leaves(path, "command")
        if not targets and not path.is_search:
            raise Fault(FaultCode.OBJECT_NOT_FOUND, "no such object", command_path)
        return targets

    # == schema lookups =========================================================================

    def schema_object(self, path: Path) -> Object:
        """The supported-model object of a path's object part (instances ignored)."""
        obj = self.schema.root
        for segment in path.object_segments()[1:]:
            if not isinstance(segment, Name):
                continue
            if segment.follow is not None:
                obj = self.reference_target(obj, segment.name)
                continue
            child = obj.children.get(segment.name)
            if child is None:
                raise Fault(FaultCode.INVALID_PATH, f"{obj.path}{segment.name} is not in the supported data model")
            obj = child
        return obj

    def reference_target(self, obj: Object, name: str) -> Object:
        """The table a reference parameter of ``obj`` points into (for reference following)."""
        parameter = obj.parameters.get(name)
        ref = parameter.type.path_ref if parameter else None
        target = self.schema.objects.get(ref.target_parents[0] + "{i}.") if ref and ref.target_parents else None
        if target is None:
            raise Fault(FaultCode.INVALID_PATH, f"{obj.path}{name} is not a reference that can be followed")
        return target

    # == internals: nodes =====================================================================

    def _new_node(self, schema: Object, path: str, parent: Node | None, number: int = 0) -> Node:
        node = Node(schema, path, parent, number)
        defaults = self._defaults.get(schema.path)
        if defaults is None:
            defaults = self._defaults[schema.path] = {n: p.default_value() for n, p in schema.parameters.items()}
        node.values = dict(defaults)
        for name, child in schema.children.items():
            if child.multi_instance:
                node.tables[name] = Table(child, f"{path}{name}.", node)
            else:
                node.singles[name] = self._new_node(child, f"{path}{name}.", node)
        return node

    def _create_row(self, table: Table, number: int | None) -> Node:
        maximum = table.schema.max_entries
        if maximum is not None and len(table.rows) >= maximum:
            raise Fault(FaultCode.RESOURCES_EXCEEDED, f"the table holds at most {maximum} rows", table.path)
        number = table.allocate(number)
        return self._new_node(table.schema, f"{table.path}{number}.", table.parent, number)

    def _attach_row(self, table: Table, row: Node) -> None:
        """Index and announce a fully valued new row."""
        key = table.key_conflict(row.values)
        if key is not None:
            shown = ", ".join(f"{n}={row.values[n]!r}" for n in key.parameters)
            raise Fault(FaultCode.DUPLICATE_KEY, f"a row with {shown} exists", row.path)
        table.rows[row.number] = row
        self._changes.count += 1
        table.index(row)
        for node in row.walk():
            self._index[node.path] = node
        keys = {k: row.values[k] for k in row.schema.key_parameters()}
        self.notifications.publish(Notification(Kind.OBJECT_CREATION, row.path, args=keys))
        self._count(table)

    def _assign_alias(self, table: Table, row: Node) -> None:
        if "Alias" not in row.schema.parameters or row.values["Alias"]:
            return
        alias = f"cpe-{row.number}"
        suffix = itertools.count(1)
        while table.find_alias(alias) is not None:
            alias = f"cpe-{row.number}-{next(suffix)}"
        row.values["Alias"] = alias

    def _count(self, table: Table) -> None:
        counter = table.schema.num_entries_parameter
        if counter:
            self._commit(table.parent, {counter: len(table.rows)})

    def _add_controller_row(self, table: Table, params: Mapping[str, Value]) -> Node:
        if not table.schema.creatable:
            raise Fault(FaultCode.NOT_CREATABLE, "a controller cannot create rows in this table", table.path)
        row = self._create_row(table, None)
        try:
            for rel, raw in params.items():
                *subs, name = rel.split(".")
                node = row
                for sub in subs:
                    if sub not in node.singles:
                        raise Fault(FaultCode.UNSUPPORTED_PARAMETER, f"no sub-object {sub!r}", rel)
                    node = node.singles[sub]
                served = self.schema.objects[node.schema.path]
                parameter = self._parameter(served, name, row.path + rel, FaultCode.UNSUPPORTED_PARAMETER)
                if parameter.access is Access.READ_ONLY:
                    raise Fault(FaultCode.NOT_WRITABLE, "read-only parameter", row.path + rel)
                value = self.references.validate(node, parameter, _parse(parameter, raw))
                self._validate(node, parameter, value)
                node.values[name] = value
            self._assign_alias(table, row)
            self._attach_row(table, row)
        except Fault as fault:
            raise fault.at(row.path) from None
        return row

    # == internals: values ======================================================================

    def _commit(self, node: Node, values: Mapping[str, Value], notify: bool = True) -> None:
        """Write checked values; keep key and reference indexes; announce changes."""
        table = node.parent.tables.get(node.schema.name) if node.parent and node.schema.multi_instance else None
        attached = node.path in self._index
        if table is not None and attached:
            table.unindex(node)
        changed = []
        for name, value in values.items():
            old = node.values.get(name)
            if old != value:
                node.values[name] = value
                changed.append(name)
        if table is not None and attached:
            table.index(node)
        if changed and attached:
            self._changes.count += 1
        if notify and changed and attached:
            for name in changed:
                self._announce_change(node, name)

    def _announce_change(self, node: Node, name: str) -> None:
        """Publish a ValueChange of a stored value (concealed ones show their null value)."""
        parameter = node.schema.parameters[name]
        shown = parameter.type.default_value() if parameter.concealed else node.values[name]
        self.notifications.publish(Notification(Kind.VALUE_CHANGE, node.path + name, value=shown))

    def _check_keys(self, changes: Mapping[Node, Mapping[str, Value]]) -> None:
        """Refuse changes that would give two rows of a table the same unique key."""
        per_table: dict[Table, dict[Node, Mapping[str, Value]]] = {}
        for node, values in changes.items():
            schema = node.schema
            relevant = {*schema.key_parameters(), schema.enable_parameter}
            if schema.unique_keys and node.parent is not None and schema.multi_instance and relevant & set(values):
                per_table.setdefault(node.parent.tables[schema.name], {})[node] = values
        for table, changed in per_table.items():
            for key in table.schema.unique_keys:
                seen: dict[tuple[Value, ...], Node] = {}
                for row in table.rows.values():
                    merged = {**row.values, **changed.get(row, {})}
                    if not table.key_applies(key, merged):
                        continue
                    value = tuple(merged[n] for n in key.parameters)
                    other = seen.setdefault(value, row)
                    if other is not row:
                        shown = ", ".join(f"{n}={v!r}" for n, v in zip(key.parameters, value, strict=True))
                        raise Fault(FaultCode.DUPLICATE_KEY, f"{other.path} and {row.path} would share {shown}")

    def _plan_set(self, requested: str, raw: Value) -> list[tuple[Node, Parameter, Value, str]]:
        path = parse_path(requested)
        if path.kind is not PathKind.PARAMETER:
            raise Fault(FaultCode.INVALID_PATH, "Set takes parameter paths", requested)
        plan = []
        for node, name in self._resolver.leaves(path, "parameter"):
            parameter = node.schema.parameters[name]
            where = node.path + name
            if not parameter.writable:
                raise Fault(FaultCode.NOT_WRITABLE, "the parameter is not writable", where)
            try:
                value = self.references.validate(node, parameter, _parse(parameter, raw))
                self._validate(node, parameter, value)
            except Fault as fault:
                raise fault.at(where) from None
            plan.append((node, parameter, value, requested))
        return plan

    def _validate(self, node: Node, parameter: Parameter, value: Value) -> None:
        validator = self._validators.get(node.schema.path + parameter.name)
        if validator:
            validator(node, value)

    def _apply_group(self, plan: list[tuple[Node, Parameter, Value, str]]) -> list[tuple[Node, dict[str, Value]]]:
        """Commit one requested path's changes, then run appliers; undo all if one fails."""
        applied: list[tuple[Node, dict[str, Value]]] = []
        for node, changes in _changes(plan).items():
            old = {name: node.values[name] for name in changes}
            self._commit(node, changes, notify=False)
            applied.append((node, old))
        try:
            for node, old in applied:
                for name, before in old.items():
                    applier = self._appliers.get(node.schema.path + name)
                    if applier:
                        applier(node, before, node.values[name])
        except Fault:
            for node, old in reversed(applied):
                self._commit(node, old, notify=False)
            raise
        for node, old in applied:
            for name, before in old.items():
                if node.values[name] != before:
                    self._announce_change(node, name)
        return applied

    def _parameter(self, schema: Object, name: str, where: str, code: FaultCode = FaultCode.INVALID_PATH) -> Parameter:
        parameter = schema.parameters.get(name)
        if parameter is None:
            raise Fault(code, f"{schema.path} has no parameter {name!r}", where)
        return parameter

    def _schema_param(self, path: str) -> Parameter:
        parameter = self.schema.parameter(path)
        if parameter is None:
            raise KeyError(f"{path} is not a parameter of the supported data model")
        return parameter

    # == internals: get =============================================================================

    def _get_one(self, path: Path, max_depth: int) -> list[ResolvedObject]:
        if path.kind is PathKind.PARAMETER:
            return [
                ResolvedObject(node.path, node.schema, MappingProxyType({name: self._shown(node, name)}))
                for node, name in self._resolver.leaves(path, "parameter")
            ]
        if path.kind is not PathKind.OBJECT:
            raise Fault(FaultCode.INVALID_PATH, "Get takes object or parameter paths", str(path))
        nodes, _ = self._resolver.objects(path)
        return [obj for start in nodes for obj in self._walk(start, max_depth)]

    def _walk(self, start: Node, depth: int) -> Iterator[ResolvedObject]:
        """``start`` and its descendants (down to ``depth`` levels, 0 = all), in tree order,
        one at a time.

        Parameters are read-only views of the stored values, not copies: a front end
        serialises them on the loop thread before the tree can change. (The hottest path
        of a partial get: locals instead of attribute and method lookups.)
        """
        cache, compute, view = self._special, self._special_params, MappingProxyType
        unserved = self._unserved_params
        stack = [(start, depth)]
        pop, extend = stack.pop, stack.extend
        while stack:
            node, level = pop()
            special = cache.get(node.schema.path)
            if special is None:
                special = compute(node.schema)
            gone = unserved.get(node.schema.path) if unserved else None
            if special or gone:
                values = dict(node.values)
                for name, getter in special:
                    values[name] = getter(node)
                for name in gone or ():
                    del values[name]
                # the view's own object, whose parameters are what it serves: encoders match
                # their per-object templates against it (buses/bulk_json.py, dbus_columns.py)
                served = self.schema.objects[node.schema.path] if gone else node.schema
                yield ResolvedObject(node.path, served, view(values))
            else:
                yield ResolvedObject(node.path, node.schema, view(node.values))
            if level == 1:
                continue
            below = level - 1 if level else 0
            children = [*node.singles.values()]
            for table in node.tables.values():
                children += table.rows.values()
            extend((child, below) for child in reversed(children))

    def _special_params(self, schema: Object) -> list[tuple[str, Getter]]:
        """Parameters of ``schema`` whose shown value is not the stored one (cached)."""
        special = self._special.get(schema.path)
        if special is None:
            special = []
            for name, parameter in schema.parameters.items():
                if parameter.concealed:
                    hidden = parameter.type.default_value()
                    special.append((name, _constant(hidden)))
                elif schema.path + name in self._getters:
                    special.append((name, self._getters[schema.path + name]))
            self._special[schema.path] = special
        return special

    def _shown(self, node: Node, name: str) -> Value:
        parameter = node.schema.parameters[name]
        return parameter.type.default_value() if parameter.concealed else self.read(node, name)

    # == internals: operate =========================================================================

    def _operate_one(self, node: Node, name: str, raw_args: Mapping[str, Value], command_key: str) -> OperateResult:
        command = node.schema.commands[name]
        executed = node.path + name
        handler = self._commands.get(command.path)
        if handler is None:
            return OperateResult(executed, fault=Fault(FaultCode.COMMAND_FAILURE, "command not implemented", executed))
        try:
            args = _command_args(command, raw_args)
            call = CommandCall(node, command, args, command_key)
            if command.is_async:
                call.request_id = str(next(self._request_ids))
            outcome = handler(call)
        except Fault as fault:
            return OperateResult(executed, fault=fault.at(executed))
        except Exception:
            log.exception("command %s failed", executed)
            return OperateResult(executed, fault=Fault(FaultCode.INTERNAL_ERROR, "see the daemon log", executed))
        if not command.is_async:
            if inspect.isawaitable(outcome):
                raise TypeError(f"handler of synchronous {command.path} returned an awaitable")
            try:
                return OperateResult(executed, outputs=_outputs(command, outcome))
            except Fault as fault:
                return OperateResult(executed, fault=fault.at(executed))
        return OperateResult(executed, request=self._start_request(call, executed, outcome))

    def _start_request(self, call: CommandCall, executed: str, outcome: Any) -> Request:
        loop = asyncio.get_running_loop()

        async def run() -> dict[str, Value]:
            result = await outcome if inspect.isawaitable(outcome) else outcome
            return _outputs(call.command, result)

        request = Request(call.request_id, executed, call.command_key, loop.create_task(run()))
        self.requests[request.id] = request
        request.future.add_done_callback(lambda future: self._finish_request(request, future))
        return request

    def _finish_request(self, request: Request, future: asyncio.Future[dict[str, Value]]) -> None:
        self.requests.pop(request.id, None)
        fault: Fault | None = None
        outputs: dict[str, Value] = {}
        if future.cancelled():
            fault = Fault(FaultCode.COMMAND_CANCELED, "canceled", request.command)
        elif isinstance(future.exception(), Fault):
            fault = future.exception()  # type: ignore[assignment]
        elif future.exception() is not None:
            log.error("command %s failed", request.command, exc_info=future.exception())
            fault = Fault(FaultCode.INTERNAL_ERROR, "see the daemon log", request.command)
        else:
            outputs = future.result()
        request.state = RequestState.FAILED if fault else RequestState.COMPLETED
        self.notifications.publish(
            Notification(
                Kind.OPERATION_COMPLETE,
                request.command,
                args=outputs,
                request_id=request.id,
                command_key=request.command_key,
                fault=fault,
            )
        )


class _Changes:
    """The change counter a tree shares with its views."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def _served_only(unserved: frozenset[str], callback: Callable[[Notification], None], note: Notification) -> None:
    """Pass ``note`` on unless it is a value change of a parameter in ``unserved``."""
    if note.kind is not Kind.VALUE_CHANGE or schema_path(note.path) not in unserved:
        callback(note)


def _changes(plan: list[tuple[Node, Parameter, Value, str]]) -> dict[Node, dict[str, Value]]:
    per_node: dict[Node, dict[str, Value]] = {}
    for node, parameter, value, _ in plan:
        per_node.setdefault(node, {})[parameter.name] = value
    return per_node


def _parse(parameter: Parameter, raw: Value) -> Value:
    return parameter.type.parse(raw) if isinstance(raw, str) else parameter.type.check(raw)


def _command_args(command: Command, raw: Mapping[str, Value]) -> dict[str, Value]:
    """Validate input arguments: unknown ones ignored (R-OPR.6), defaults applied (R-OPR.7),
    missing mandatory ones refused (R-OPR.5)."""
    args: dict[str, Value] = {}
    given_tables: dict[str, set[str]] = {}
    for name, value in raw.items():
        parameter = command.inputs.get(schema_path(name))
        if parameter is None:
            log.info("%s: ignoring unknown input argument %r", command.path, name)
            continue
        if value == "" and not parameter.mandatory:
            continue  # TR-106: an empty optional argument is an absent one
        try:
            args[name] = _parse(parameter, value)
        except Fault as fault:
            raise Fault(FaultCode.INVALID_COMMAND_ARGUMENTS, f"{name}: {fault.message}", command.path) from None
        if "{i}" in parameter.name:
            prefix = name[: len(name) - len(name.split(".")[-1])]
            given_tables.setdefault(parameter.name.rsplit(".", 1)[0] + ".", set()).add(prefix)
    for name, parameter in command.inputs.items():
        if "{i}" in name:
            table = name.rsplit(".", 1)[0] + "."
            for prefix in given_tables.get(table, ()):
                concrete = prefix + name.rsplit(".", 1)[1]
                _default_or_missing(command, parameter, concrete, args)
        elif _object_given(name, args):
            _default_or_missing(command, parameter, name, args)
    return args


def _object_given(name: str, args: Mapping[str, Value]) -> bool:
    """Arguments of a sub-object ("AutoRestart.Enable") are required, or defaulted, only
    when the controller gives that sub-object at all."""
    owner = name.rsplit(".", 1)[0] + "." if "." in name else ""
    return not owner or any(arg.startswith(owner) for arg in args)


def _default_or_missing(command: Command, parameter: Parameter, name: str, args: dict[str, Value]) -> None:
    if name in args:
        return
    if parameter.mandatory:
        raise Fault(FaultCode.INVALID_COMMAND_ARGUMENTS, f"mandatory input argument {name} is missing", command.path)
    if parameter.default is not None:
        args[name] = parameter.default_value()


def _constant(value: Value) -> Getter:
    """A getter answering ``value`` whatever the node (a concealed parameter's default)."""
    return lambda node: value


def _outputs(command: Command, result: Mapping[str, Value] | None) -> dict[str, Value]:
    outputs: dict[str, Value] = {}
    for name, value in (result or {}).items():
        parameter = command.outputs.get(schema_path(name))
        if parameter is None:
            raise Fault(FaultCode.INTERNAL_ERROR, f"unknown output argument {name!r}", command.path)
        outputs[name] = parameter.type.check(value)
    return outputs
