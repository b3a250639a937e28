"""Object instances: single-instance objects and table rows (:class:`Node`), tables (:class:`Table`)."""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.model import Object, UniqueKey
from dsm_tr181.schema.types import Value

NO_SINGLES: dict[str, Node] = MappingProxyType({})  # type: ignore[assignment]
NO_TABLES: dict[str, Table] = MappingProxyType({})  # type: ignore[assignment]


class Node:
    """One object instance: its typed parameter values and its sub-objects."""

    __slots__ = ("number", "parent", "path", "schema", "singles", "tables", "values")

    def __init__(self, schema: Object, path: str, parent: Node | None, number: int = 0) -> None:
        self.schema = schema
        self.path = path  # instantiated path with trailing dot ("Device.SoftwareModules.ExecEnv.1.")
        self.parent = parent
        self.number = number  # instance number for table rows, 0 otherwise
        self.values: dict[str, Value] = {}
        # Leaf objects share one empty mapping: most rows have no sub-objects.
        self.singles: dict[str, Node] = {} if schema.children else NO_SINGLES
        self.tables: dict[str, Table] = {} if schema.children else NO_TABLES

    @property
    def ref(self) -> str:
        """The path used in reference parameters (no trailing dot)."""
        return self.path[:-1]

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first, in instance order."""
        yield self
        for child in self.singles.values():
            yield from child.walk()
        for table in self.tables.values():
            for row in table.rows.values():
                yield from row.walk()

    def __repr__(self) -> str:
        return f"<Node {self.path}>"


class Table:
    """A multi-instance object under a parent node: rows by instance number and key indexes."""

    __slots__ = ("keys", "next_instance", "parent", "path", "rows", "schema")

    def __init__(self, schema: Object, path: str, parent: Node) -> None:
        self.schema = schema
        self.path = path  # "Device.SoftwareModules.DeploymentUnit."
        self.parent = parent
        self.rows: dict[int, Node] = {}
        # Instance numbers are never reused within a table (persisted by the store).
        self.next_instance = 1
        # unique key -> key values -> row; an index appears when the first row does
        self.keys: dict[UniqueKey, dict[tuple[Value, ...], Node]] = {}

    def allocate(self, number: int | None = None) -> int:
        if number is None:
            number = self.next_instance
        elif number in self.rows:
            raise Fault(FaultCode.OBJECT_NOT_CREATED, f"instance {number} already exists", self.path)
        self.next_instance = max(self.next_instance, number + 1)
        return number

    def key_applies(self, key: UniqueKey, values: dict[str, Value]) -> bool:
        """TR-106: functional keys of a table with an Enable parameter bind enabled rows only."""
        return self._binds_every_row(key) or bool(values.get(self.schema.enable_parameter, False))

    def _binds_every_row(self, key: UniqueKey) -> bool:
        return not (key.functional and self.schema.enable_parameter)

    def key_conflict(self, values: dict[str, Value], ignore: Node | None = None) -> UniqueKey | None:
        for key in self.schema.unique_keys:
            if not self.key_applies(key, values):
                continue
            holder = self.keys.get(key, {}).get(tuple(values[name] for name in key.parameters))
            if holder is not None and holder is not ignore:
                return key
        return None

    def index(self, row: Node) -> None:
        for key in self.schema.unique_keys:
            if self.key_applies(key, row.values):
                self.keys.setdefault(key, {})[tuple(row.values[name] for name in key.parameters)] = row

    def unindex(self, row: Node) -> None:
        for key, index in self.keys.items():
            value = tuple(row.values[name] for name in key.parameters)
            if index.get(value) is row:
                del index[value]

    def find_key(self, name: str, value: Value) -> Node | None:
        """The row whose one-parameter unique key ``name`` is ``value``, through the key's
        index; None when no row has it, or when the index does not hold every row (no such
        key, or a functional key of a table with an Enable parameter: see key_applies)."""
        for key in self.schema.unique_keys:
            if key.parameters == (name,) and self._binds_every_row(key):
                return self.keys.get(key, {}).get((value,))
        return None

    def find_alias(self, alias: str) -> Node | None:
        for key, index in self.keys.items():
            if key.parameters == ("Alias",):
                return index.get((alias,))
        return None
