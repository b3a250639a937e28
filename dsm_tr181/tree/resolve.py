"""Resolve parsed USP paths against the instance tree (instances, aliases, wildcards, searches,
reference following)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.model import Parameter
from dsm_tr181.schema.types import UNKNOWN_TIME, BaseType, Value
from dsm_tr181.tree.nodes import Node, Table
from dsm_tr181.tree.paths import AliasRef, Condition, Instance, Name, Path, RefFollow, Search, Segment, Wildcard

if TYPE_CHECKING:
    from dsm_tr181.tree.datamodel import DataModel

_ORDERED = (BaseType.INT, BaseType.UNSIGNED_INT, BaseType.LONG, BaseType.UNSIGNED_LONG, BaseType.DATETIME)


class Resolver:
    def __init__(self, dm: DataModel) -> None:
        self.dm = dm

    # -- entry points ----------------------------------------------------------------------

    def objects(self, path: Path, expand_table: bool = True) -> tuple[list[Node], list[Table]]:
        """The nodes an object path (or the object part of a leaf path) selects.

        A path ending at a table name ("...DeploymentUnit.") selects the table: its rows
        when ``expand_table`` (Get), or the table itself (Add).
        """
        segments = path.object_segments()
        first = segments[0]
        root = self.dm.root
        if not isinstance(first, Name) or first.name != root.schema.name:
            raise Fault(FaultCode.INVALID_PATH, f"paths start with {root.schema.name!r}", str(path))
        nodes: list[Node] = [root]
        tables: list[Table] = []
        for index, segment in enumerate(segments[1:], start=1):
            if tables:
                nodes, tables = self._select(tables, segment, path), []
                continue
            if not isinstance(segment, Name):
                raise Fault(FaultCode.INVALID_PATH, f"{_where(segments, index)} is not a table", str(path))
            nodes, tables = self._descend(nodes, segment, path, segments, index)
        if tables and expand_table:
            nodes = [row for table in tables for row in table.rows.values()]
            tables = []
        return nodes, tables

    def leaves(self, path: Path, kind: str) -> list[tuple[Node, str]]:
        """(node, leaf name) pairs for a parameter, command or event path."""
        nodes, _ = self.objects(path, expand_table=False)
        leaf = path.leaf
        # No instances: the path must still be valid in the supported model.
        # The objects as the DataModel serves them (a flavour's view lacks some leaves).
        schema = self.dm.schema.objects[nodes[0].schema.path] if nodes else self.dm.schema_object(path)
        kinds: dict[str, Mapping[str, object]] = {
            "parameter": schema.parameters, "command": schema.commands, "event": schema.events
        }  # fmt: skip
        if leaf not in kinds[kind]:
            raise Fault(FaultCode.INVALID_PATH, f"{schema.path} has no {kind} {leaf!r}", str(path))
        return [(node, leaf) for node in nodes]

    # -- walking -------------------------------------------------------------------------------

    def _descend(
        self, nodes: list[Node], segment: Name, path: Path, segments: tuple[Segment, ...], index: int
    ) -> tuple[list[Node], list[Table]]:
        name = segment.name
        if not nodes:
            self.dm.schema_object(path)
            return [], []
        schema = nodes[0].schema
        if segment.follow is not None:
            parameter = schema.parameters.get(name)
            if parameter is None or parameter.type.path_ref is None:
                raise Fault(FaultCode.INVALID_PATH, f"{schema.path}{name} is not a reference parameter", str(path))
            return [t for node in nodes for t in self.follow(node, name, segment.follow)], []
        child = schema.children.get(name)
        if child is None:
            raise Fault(FaultCode.INVALID_PATH, f"{_where(segments, index)} is not in the supported data model")
        if child.multi_instance:
            return [], [node.tables[name] for node in nodes]
        return [node.singles[name] for node in nodes], []

    def _select(self, tables: list[Table], selector: Segment, path: Path) -> list[Node]:
        if isinstance(selector, Instance):
            rows = [t.rows[selector.number] for t in tables if selector.number in t.rows]
            if not rows and not path.is_search:
                raise Fault(FaultCode.OBJECT_NOT_FOUND, f"{tables[0].path}{selector.number} does not exist")
            return rows
        if isinstance(selector, Wildcard):
            return [row for t in tables for row in t.rows.values()]
        if isinstance(selector, AliasRef):
            rows = [row for t in tables if (row := t.find_alias(selector.alias)) is not None]
            if not rows and not path.is_search:
                raise Fault(FaultCode.OBJECT_NOT_FOUND, f"{tables[0].path}[{selector.alias}] does not exist")
            return rows
        if isinstance(selector, Search):
            tests = [self._condition(tables[0], c) for c in selector.conditions] if tables else []
            return [row for t in tables for row in t.rows.values() if all(test(row) for test in tests)]
        raise Fault(FaultCode.INVALID_PATH, f"{tables[0].path} is a table: an instance must follow", str(path))

    def follow(self, node: Node, name: str, follow: RefFollow) -> list[Node]:
        """Nodes referenced by ``node.name`` (TR-369 §2.6.1 reference following)."""
        value = self.dm.read(node, name)
        refs = list(value) if isinstance(value, tuple) else [value] if value else []
        if follow.index is not None:
            refs = refs[follow.index - 1 : follow.index]
        found = (self.dm.find_node(str(ref)) for ref in refs)
        return [target for target in found if target is not None]

    # -- search expressions ---------------------------------------------------------------------

    def _condition(self, table: Table, condition: Condition) -> Callable[[Node], bool]:
        """A predicate on a row; the constant is parsed once with the parameter's type."""
        parameter = self._expression_parameter(table, condition)
        dtype = parameter.type
        is_string = dtype.base is BaseType.STRING
        if condition.quoted != is_string:
            want = "quoted" if is_string else "unquoted"
            raise Fault(FaultCode.INVALID_PATH_SYNTAX, f"{condition.describe()}: the constant must be {want}")
        op = condition.operator
        if op == "~=":
            if dtype.list is None:
                raise Fault(FaultCode.INVALID_PATH_SYNTAX, f"{condition.describe()}: '~=' needs a list parameter")
            constant: Value = dtype.item_type().parse(condition.literal)
        else:
            constant = dtype.parse(condition.literal)
            if op not in ("==", "!=") and (dtype.base not in _ORDERED or dtype.list is not None
                                           or constant == UNKNOWN_TIME):  # fmt: skip
                raise Fault(FaultCode.INVALID_PATH_SYNTAX, f"{condition.describe()}: {op} needs a number or time")
        compare = _COMPARE[op]

        def test(row: Node) -> bool:
            return any(compare(value, constant) for value in self._expression_values(row, condition.relpath))

        return test

    def _expression_parameter(self, table: Table, condition: Condition) -> Parameter:
        schema = table.schema
        for name in condition.relpath[:-1]:
            if name.follow is not None:
                schema = self.dm.reference_target(schema, name.name)
                continue
            child = schema.children.get(name.name)
            if child is None or child.multi_instance:
                raise Fault(FaultCode.INVALID_PATH, f"{schema.path}{name.name}. is not a single-instance sub-object")
            schema = child
        parameter = schema.parameters.get(condition.relpath[-1].name)
        if parameter is None:
            raise Fault(FaultCode.INVALID_PATH, f"{schema.path} has no parameter {condition.relpath[-1].name!r}")
        return parameter

    def _expression_values(self, row: Node, relpath: tuple[Name, ...]) -> list[Value]:
        nodes = [row]
        for name in relpath[:-1]:
            if name.follow is not None:
                nodes = [t for n in nodes for t in self.follow(n, name.name, name.follow)]
            else:
                nodes = [n.singles[name.name] for n in nodes]
        return [self.dm.read(n, relpath[-1].name) for n in nodes]


def _where(segments: tuple[Segment, ...], index: int) -> str:
    return ".".join(getattr(s, "name", "?") for s in segments[: index + 1])


def _ordered(op: Callable[[object, object], bool]) -> Callable[[Value, Value], bool]:
    def compare(value: Value, constant: Value) -> bool:
        if isinstance(value, datetime) and value == UNKNOWN_TIME:
            return False
        return op(value, constant)

    return compare


_COMPARE: dict[str, Callable[[Value, Value], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "~=": lambda a, b: isinstance(a, tuple) and b in a,
    "<": _ordered(lambda a, b: a < b),  # type: ignore[operator]
    ">": _ordered(lambda a, b: a > b),  # type: ignore[operator]
    "<=": _ordered(lambda a, b: a <= b),  # type: ignore[operator]
    ">=": _ordered(lambda a, b: a >= b),  # type: ignore[operator]
}
