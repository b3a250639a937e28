"""Reference parameters (TR-369 R-ARC.11/12): normalisation, validation and integrity.

Strong references must name an existing object when set, and are cleared (or the list
item removed) when the object they name is deleted; weak references are left alone.
Targets outside the served tree (``Device.LocalAgent.Controller.`` ...) can only be
checked for syntax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.model import Parameter
from dsm_tr181.schema.types import PathRef, RefType, Value
from dsm_tr181.tree.nodes import Node
from dsm_tr181.tree.paths import Name, Path, PathKind, parse_path

if TYPE_CHECKING:
    from dsm_tr181.tree.datamodel import DataModel


class References:
    def __init__(self, dm: DataModel) -> None:
        self.dm = dm
        self._strong: dict[str, list[Parameter]] = {}  # schema object path -> its strong references
        self._naming: dict[frozenset[str], dict[str, list[Parameter]]] = {}  # see drop_targets

    def validate(self, node: Node, parameter: Parameter, value: Value) -> Value:
        """Check a new value of a reference parameter; return it in canonical form
        (instance numbers, no trailing dot)."""
        ref = parameter.type.path_ref
        if ref is None:
            return value
        items = value if isinstance(value, tuple) else (value,)
        canonical = tuple(self._canonical(ref, str(item)) for item in items)
        return canonical if isinstance(value, tuple) else canonical[0]

    def drop_targets(self, gone: list[Node]) -> None:
        """The objects ``gone`` were deleted: clear strong references to them.

        Deletions are rare, so the referring rows are found by a scan rather than kept in
        an index (which would cost memory and start-up time for every row). The scan reads
        only the parameters that can name such objects (a stored reference fits its
        targetParent and targetType): at 1000 DUs it took 16 ms per deleted row reading
        every strong reference of every row."""
        refs = {node.ref for node in gone}
        kinds = frozenset(node.schema.path for node in gone)
        naming = self._naming.setdefault(kinds, {})  # schema object path -> its parameters that may name them
        for node in self.dm.nodes():
            parameters = naming.get(node.schema.path)
            if parameters is None:
                parameters = naming[node.schema.path] = [
                    p for p in self._strong_parameters(node) if _may_name(p, kinds)
                ]
            for parameter in parameters:
                current = node.values[parameter.name]
                if not current:
                    continue
                if isinstance(current, tuple):
                    remaining = tuple(item for item in current if item not in refs)
                    if remaining != current:
                        self.dm.update(node, {parameter.name: remaining})
                elif current in refs:
                    self.dm.update(node, {parameter.name: ""})

    def _strong_parameters(self, node: Node) -> list[Parameter]:
        found = self._strong.get(node.schema.path)
        if found is None:
            found = self._strong[node.schema.path] = [
                p
                for p in node.schema.parameters.values()
                if p.type.path_ref is not None and p.type.path_ref.ref_type is RefType.STRONG
            ]
        return found

    def _canonical(self, ref: PathRef, text: str) -> str:
        if text == "":
            return ""
        node = self.dm.find_node(text) if "[" not in text else None
        if node is not None and _fits(node.schema.path, ref):
            return node.ref  # the common case: an existing row named by instance numbers
        path_text = text if text.endswith(".") else text + "."
        path = parse_path(path_text)
        if path.kind is not PathKind.OBJECT or path.is_search:
            raise Fault(FaultCode.INVALID_VALUE, f"{text!r} is not an object reference")
        schema_path = _schema_path(path)
        if not _fits(schema_path, ref):
            allowed = ", ".join(ref.target_parents)
            raise Fault(FaultCode.INVALID_VALUE, f"{text!r} is not a row of {allowed}")
        if not _served(self.dm, path):
            return path_text[:-1]
        node = self.dm.find_node(path_text)
        if node is None:
            if ref.ref_type is RefType.STRONG:
                raise Fault(FaultCode.INVALID_VALUE, f"{text!r} does not reference an existing object")
            return path_text[:-1]
        return node.ref


def _may_name(parameter: Parameter, schema_paths: frozenset[str]) -> bool:
    """May reference parameter ``parameter`` name an object at one of ``schema_paths``?"""
    ref = parameter.type.path_ref
    return ref is not None and any(_fits(schema_path, ref) for schema_path in schema_paths)


def _schema_path(path: Path) -> str:
    return ".".join(s.name if isinstance(s, Name) else "{i}" for s in path.segments) + "."


def _fits(schema_path: str, ref: PathRef) -> bool:
    """May a reference of kind ``ref`` name the object at ``schema_path``?"""
    if ref.target_parents and not any(_under(schema_path, parent) for parent in ref.target_parents):
        return False
    return ref.target_type != "row" or schema_path.endswith(".{i}.")


def _under(schema_path: str, parent: str) -> bool:
    """Is the object at ``schema_path`` a direct child (row or sub-object) of ``parent``?"""
    if not schema_path.startswith(parent):
        return False
    rest = schema_path[len(parent) :]
    return rest == "{i}." or (rest.count(".") == 1 and rest != ".")


def _served(dm: DataModel, path: Path) -> bool:
    try:
        dm.schema_object(path)
    except Fault:
        return False
    return True
