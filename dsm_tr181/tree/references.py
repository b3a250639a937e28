"""Reference parameters (TR-369 R-ARC.11/12): normalisation, validation and integrity.

Strong references must name an existing object when set, and are cleared (or the list
item removed) when the object they name is deleted; weak references are left alone.
Targets outside the served tree (``Device.LocalAgent.Controller.`` ...) can only be
checked for syntax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.model import Object, Parameter
from dsm_tr181.schema.types import PathRef, RefType, Value
from dsm_tr181.tree.nodes import Node
from dsm_tr181.tree.paths import Name, Path, PathKind, parse_path

if TYPE_CHECKING:
    from dsm_tr181.tree.datamodel import DataModel


class References:
    def __init__(self, dm: DataModel) -> None:
        self.dm = dm
        # referenced object path (no trailing dot) -> strong referrers (node, parameter name)
        self._referrers: dict[str, set[tuple[Node, str]]] = {}
        self._strong: dict[str, list[Parameter]] = {}  # schema object path -> its strong refs

    def strong_parameters(self, schema: Object) -> list[Parameter]:
        """The strong reference parameters of an object (cached)."""
        found = self._strong.get(schema.path)
        if found is None:
            found = self._strong[schema.path] = [
                p for p in schema.parameters.values() if p.type.path_ref and p.type.path_ref.ref_type is RefType.STRONG
            ]
        return found

    def validate(self, node: Node, parameter: Parameter, value: Value) -> Value:
        """Check a new value of a reference parameter; return it in canonical form
        (instance numbers, no trailing dot)."""
        ref = parameter.type.path_ref
        if ref is None:
            return value
        items = value if isinstance(value, tuple) else (value,)
        canonical = tuple(self._canonical(ref, str(item)) for item in items)
        return canonical if isinstance(value, tuple) else canonical[0]

    def track(self, node: Node, parameter: Parameter, value: Value, old: Value | None = None) -> None:
        ref = parameter.type.path_ref
        if ref is None or ref.ref_type is not RefType.STRONG:
            return
        for item in _items(old):
            self._referrers.get(item, set()).discard((node, parameter.name))
        for item in _items(value):
            self._referrers.setdefault(item, set()).add((node, parameter.name))

    def forget(self, node: Node) -> None:
        """``node`` is going away: it refers to nothing any more."""
        for parameter in self.strong_parameters(node.schema):
            self.track(node, parameter, None, node.values.get(parameter.name))

    def drop_targets(self, targets: list[str]) -> None:
        """The objects at ``targets`` were deleted: clear strong references to them."""
        for target in targets:
            for node, name in sorted(self._referrers.pop(target, set()), key=lambda r: (r[0].path, r[1])):
                current = node.values[name]
                if isinstance(current, tuple):
                    remaining = tuple(item for item in current if item != target)
                    self.dm.update(node, {name: remaining})
                else:
                    self.dm.update(node, {name: ""})

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


def _items(value: Value | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    return tuple(str(v) for v in value) if isinstance(value, tuple) else (str(value),)


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
