"""Parameter reads for rbus get handlers, one loop round trip per table row.

librbus expands partial and wildcard gets itself and calls the get handler once per
leaf, in tree order: every parameter of a row, then its sub-objects, then the next
row. A round trip to the loop per leaf would cost ~70 µs each, 10 s for a large tree,
so a miss reads the whole unit the leaf belongs to (the outermost table row holding
it with everything below, or a lone object outside any row) into a snapshot on the
loop, and the following leaves are answered from it.

A snapshot answers only while nothing changed in the tree (a generation counter the
loop bumps on every ValueChange, ObjectCreation and ObjectDeletion) and for at most
``MAX_AGE`` seconds, which bounds how stale a computed value (``on_get``) can be.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.rbus_values import to_rbus
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.nodes import Node

MAX_AGE: Final = 0.01  # seconds; a row's leaves are read within ~0.2 ms of each other


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    taken: float  # time.monotonic()
    values: Mapping[str, Any]  # concrete parameter path -> value as rbus carries it
    aliases: Mapping[str, str] = field(default_factory=dict)  # "...[web].Name" -> "...3.Name"


class SnapshotReads:
    def __init__(self, dm: DataModel, bridge: LoopBridge) -> None:
        self._dm = dm
        self._bridge = bridge
        self.generation = 0  # written on the loop only; an int read is atomic
        self._snapshot: Snapshot | None = None

    def changed(self) -> None:
        """The tree changed (called on the loop): snapshots taken before are void."""
        self.generation += 1

    def get(self, name: str) -> Any:
        """The value of parameter ``name`` (concrete or with ``[alias]``); on a bus thread."""
        snapshot = self._snapshot
        if (
            snapshot is not None
            and snapshot.generation == self.generation
            and time.monotonic() - snapshot.taken < MAX_AGE
        ):
            concrete = snapshot.aliases.get(name, name)
            if concrete in snapshot.values:
                return snapshot.values[concrete]
        snapshot, concrete = self._bridge.call(self._take, name)
        self._snapshot = snapshot
        return snapshot.values[concrete]

    def _take(self, name: str) -> tuple[Snapshot, str]:
        """On the loop: the snapshot of the unit holding ``name``, and its concrete path."""
        obj_path, _, leaf = name.rpartition(".")
        node = self._dm.find_node(obj_path + ".")
        if node is None:
            raise Fault(FaultCode.OBJECT_NOT_FOUND, "no such object", name)
        if leaf not in node.schema.parameters:
            raise Fault(FaultCode.INVALID_PATH, "no such parameter", name)
        unit = _outermost_row(node)
        # max_depth 1: the object alone; 0: the row and everything below it.
        results = self._dm.get([(unit or node).path], max_depth=0 if unit else 1)
        values: dict[str, Any] = {}
        for result in results:
            if result.fault is not None:
                raise result.fault
            for obj in result.resolved:
                types = obj.schema.parameters
                for param, value in obj.params.items():
                    values[obj.path + param] = to_rbus(types[param].type, value)
        concrete = node.path + leaf
        aliases = {name: concrete} if name != concrete else {}
        return Snapshot(self.generation, time.monotonic(), values, aliases), concrete


def _outermost_row(node: Node) -> Node | None:
    row = None
    current: Node | None = node
    while current is not None:
        if current.schema.multi_instance:
            row = current
        current = current.parent
    return row
