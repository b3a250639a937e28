"""An independent reading of BBF data-model (DM) documents, for the conformance tests.

It shares nothing with ``dsm_tr181.schema.loader`` on purpose: comparing the product with
its own loader's output would prove nothing. It reads a DM document with lxml and
returns plain facts: named data types are resolved along their ``base`` chain (each facet
kind taken from the most derived definition that states it), and ``pathRef`` target
parents are resolved to absolute paths by TR-106 A.2.3.4 (a leading ``.`` is relative to
the root object, each leading ``#`` goes up one level from the current object, a name
starting with the root's is absolute, anything else is relative to the current object).
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

BASE_TYPES = frozenset(
    {"base64", "boolean", "dateTime", "decimal", "hexBinary", "int", "long", "string", "unsignedInt", "unsignedLong"}
)
GONE = frozenset({"obsoleted", "deleted"})
Size = tuple[int, int | None]  # (minLength, maxLength); an absent minLength is 0
Range = tuple[int | None, int | None, int]  # (minInclusive, maxInclusive, step)


@dataclass(frozen=True)
class ListFacts:
    min_items: int
    max_items: int | None
    sizes: tuple[Size, ...]


@dataclass(frozen=True)
class PathRefFacts:
    ref_type: str
    target_type: str
    target_data_type: str
    target_parents: tuple[str, ...]


@dataclass(frozen=True)
class TypeFacts:
    base: str
    name: str  # the named data type the syntax refers to, "" if anonymous
    chain: tuple[str, ...]  # that name and the names it derives from
    list: ListFacts | None
    sizes: tuple[Size, ...]
    ranges: tuple[Range, ...]
    enumerations: tuple[str, ...]
    patterns: tuple[str, ...]
    path_ref: PathRefFacts | None
    units: str


@dataclass(frozen=True)
class ParameterFacts:
    name: str  # relative; arguments of sub-objects are flattened ("AutoRestart.Enable")
    access: str
    type: TypeFacts
    default: str | None
    mandatory: bool
    hidden: bool
    secured: bool
    command: bool  # syntax/@command: reads back as the null value


@dataclass(frozen=True)
class ArgumentObjectFacts:
    name: str
    min_entries: int
    max_entries: int | None


@dataclass
class CommandFacts:
    name: str
    is_async: bool
    inputs: dict[str, ParameterFacts] = field(default_factory=dict)
    outputs: dict[str, ParameterFacts] = field(default_factory=dict)
    input_objects: dict[str, ArgumentObjectFacts] = field(default_factory=dict)
    output_objects: dict[str, ArgumentObjectFacts] = field(default_factory=dict)


@dataclass
class EventFacts:
    name: str
    arguments: dict[str, ParameterFacts] = field(default_factory=dict)
    objects: dict[str, ArgumentObjectFacts] = field(default_factory=dict)


@dataclass
class ObjectFacts:
    path: str
    access: str
    min_entries: int
    max_entries: int | None
    num_entries_parameter: str
    unique_keys: tuple[tuple[tuple[str, ...], bool], ...]  # (parameter names, functional)
    parameters: dict[str, ParameterFacts]
    commands: dict[str, CommandFacts]
    events: dict[str, EventFacts]


@dataclass(frozen=True)
class ProfileFacts:
    name: str
    # object path -> (object requirement, {parameter name: parameter requirement})
    objects: dict[str, tuple[str, dict[str, str]]]


def read_bytes(path: Path) -> bytes:
    """A file's content, decompressed if it is ``.xz``."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def parse_xml(data: bytes) -> etree._Element:
    parser = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True, huge_tree=True)
    return etree.fromstring(data, parser)


def segments(path: str) -> list[str]:
    """Path levels, a table's ``{i}`` kept with its name: "A.B.{i}.C." -> ["A", "B.{i}", "C"]."""
    levels: list[str] = []
    for part in path.rstrip(".").split("."):
        if part == "{i}":
            levels[-1] += ".{i}"
        elif part:
            levels.append(part)
    return levels


def resolve_target(target: str, current: list[str]) -> str:
    """TR-106 A.2.3.4 ("normal" scope): a pathRef target parent relative to ``current`` levels."""
    if target.startswith("#"):
        ups = len(target) - len(target.lstrip("#"))
        return ".".join(current[:-ups]) + target[ups:]
    if target.startswith("."):
        return current[0] + target
    if target.startswith(current[0] + "."):
        return target
    return ".".join(current) + "." + target


def _int(text: str | None) -> int | None:
    return None if text is None or text == "unbounded" else int(text)


def _current(element: etree._Element, tag: str) -> list[etree._Element]:
    return [child for child in element.findall(tag) if child.get("status") not in GONE]


class DataModelDocument:
    """One DM document: its named data types, objects (read on demand) and profiles."""

    def __init__(self, root: etree._Element) -> None:
        self.spec = root.get("spec", "")
        model = root.find("model")
        self.model_name = model.get("name", "")
        self.types = {dt.get("name"): dt for dt in root.findall("dataType")}
        self._elements = {obj.get("name"): obj for obj in _current(model, "object")}
        self._profiles = {p.get("name"): p for p in _current(model, "profile")}
        self._objects: dict[str, ObjectFacts] = {}

    @classmethod
    def load(cls, path: Path) -> DataModelDocument:
        return cls(parse_xml(read_bytes(path)))

    # -- objects ------------------------------------------------------------------------------

    def object_paths(self) -> list[str]:
        return list(self._elements)

    def has_object(self, path: str) -> bool:
        return path in self._elements or path + "{i}." in self._elements

    def object(self, path: str) -> ObjectFacts:
        if path not in self._objects:
            self._objects[path] = self._object(self._elements[path])
        return self._objects[path]

    def _object(self, element: etree._Element) -> ObjectFacts:
        path = element.get("name")
        here = segments(path)
        commands = {c.get("name"): self._command(c, here) for c in _current(element, "command")}
        events = {}
        for event in _current(element, "event"):
            facts = EventFacts(event.get("name"))
            self._arguments(event, [[*here, facts.name]], "", facts.arguments, facts.objects)
            events[facts.name] = facts
        return ObjectFacts(
            path=path,
            access=element.get("access", "readOnly"),
            min_entries=_int(element.get("minEntries", "1")) or 0,
            max_entries=_int(element.get("maxEntries", "1")),
            num_entries_parameter=element.get("numEntriesParameter", ""),
            unique_keys=tuple(
                (tuple(p.get("ref") for p in key.findall("parameter")), key.get("functional") != "false")
                for key in element.findall("uniqueKey")
            ),
            parameters={p.get("name"): self._parameter(p, "", [here]) for p in _current(element, "parameter")},
            commands=commands,
            events=events,
        )

    def _command(self, element: etree._Element, here: list[str]) -> CommandFacts:
        facts = CommandFacts(element.get("name"), element.get("async") == "true")
        for tag, params, objects in (
            ("input", facts.inputs, facts.input_objects),
            ("output", facts.outputs, facts.output_objects),
        ):
            container = element.find(tag)
            if container is not None:
                # BBF's authors count argument paths from the command, or from an extra
                # Input/Output level (bbfreport accepts both): try both, in that order.
                scopes = [[*here, facts.name], [*here, facts.name, tag.title()]]
                self._arguments(container, scopes, "", params, objects)
        return facts

    def _arguments(
        self,
        container: etree._Element,
        scopes: list[list[str]],
        prefix: str,
        params: dict[str, ParameterFacts],
        objects: dict[str, ArgumentObjectFacts],
    ) -> None:
        for child in container:
            if child.get("status") in GONE:
                continue
            if child.tag == "parameter":
                parameter = self._parameter(child, prefix, scopes)
                params[parameter.name] = parameter
            elif child.tag == "object":
                name = prefix + child.get("name")
                objects[name] = ArgumentObjectFacts(
                    name, _int(child.get("minEntries", "1")) or 0, _int(child.get("maxEntries", "1"))
                )
                nested = [scope + segments(child.get("name")) for scope in scopes]
                self._arguments(child, nested, name, params, objects)

    def _parameter(self, element: etree._Element, prefix: str, scopes: list[list[str]]) -> ParameterFacts:
        syntax = element.find("syntax")
        default = syntax.find("default")
        return ParameterFacts(
            name=prefix + element.get("name"),
            access=element.get("access", "readOnly"),
            type=self._type(syntax, scopes),
            default=None if default is None else default.get("value"),
            mandatory=element.get("mandatory") == "true",
            hidden=syntax.get("hidden") == "true",
            secured=syntax.get("secured") == "true",
            command=syntax.get("command") == "true",
        )

    # -- data types ---------------------------------------------------------------------------

    def chain(self, name: str) -> tuple[str, ...]:
        names = [name]
        while (base := self.types[names[-1]].get("base")) is not None:
            names.append(base)
        return tuple(names)

    def _type(self, syntax: etree._Element, scopes: list[list[str]]) -> TypeFacts:
        ref = syntax.find("dataType")
        chain: tuple[str, ...] = ()
        if ref is None:
            primitive = _primitive(syntax)
            layers = [syntax, primitive]
        else:
            chain = self.chain(ref.get("ref"))
            definitions = [self.types[name] for name in reversed(chain)]  # base first
            primitive = _primitive(definitions[0])
            layers = [definitions[0], primitive, *definitions[1:], syntax, ref]
        lists = [layer.find("list") for layer in layers if layer.find("list") is not None]
        path_refs = _facet(layers, "pathRef")
        units = _facet(layers, "units")
        return TypeFacts(
            base=primitive.tag,
            name=chain[0] if chain else "",
            chain=chain,
            list=_list_facts(lists[-1]) if lists else None,
            sizes=tuple(_size(s) for s in _facet(layers, "size")),
            ranges=tuple(
                (_int(r.get("minInclusive")), _int(r.get("maxInclusive")), int(r.get("step", "1")))
                for r in _facet(layers, "range")
            ),
            enumerations=tuple(e.get("value") for e in _facet(layers, "enumeration") if e.get("status") not in GONE),
            patterns=tuple(p.get("value") for p in _facet(layers, "pattern") if p.get("status") not in GONE),
            path_ref=self._path_ref(path_refs[-1], scopes) if path_refs else None,
            units=units[-1].get("value") if units else "",
        )

    def _path_ref(self, element: etree._Element, scopes: list[list[str]]) -> PathRefFacts:
        parents = []
        for target in element.get("targetParent", "").split():
            candidates = [resolve_target(target, scope) for scope in scopes]
            parents.append(next((c for c in candidates if self.has_object(c)), candidates[0]))
        return PathRefFacts(
            ref_type=element.get("refType", "strong"),
            target_type=element.get("targetType", "any"),
            target_data_type=element.get("targetDataType", "any"),
            target_parents=tuple(parents),
        )

    # -- profiles -----------------------------------------------------------------------------

    def profile(self, name: str) -> ProfileFacts:
        """A profile with everything it inherits (``base`` and ``extends``) folded in."""
        element = self._profiles[name]
        objects: dict[str, tuple[str, dict[str, str]]] = {}
        inherited = [element.get("base", ""), *element.get("extends", "").split()]
        for parent in filter(None, inherited):
            for path, (requirement, params) in self.profile(parent).objects.items():
                objects[path] = (requirement, dict(params))
        for obj in element.findall("object"):
            path = obj.get("ref")
            params = objects.get(path, ("", {}))[1]
            params.update({p.get("ref"): p.get("requirement") for p in obj.findall("parameter")})
            objects[path] = (obj.get("requirement"), params)
        return ProfileFacts(name, objects)


def _primitive(container: etree._Element) -> etree._Element:
    for child in container:
        if child.tag in BASE_TYPES:
            return child
    raise ValueError(f"line {container.sourceline}: no base type")


def _facet(layers: list[etree._Element], tag: str) -> list[etree._Element]:
    """The ``tag`` facets of the most derived layer that states any."""
    for layer in reversed(layers):
        found = layer.findall(tag)
        if found:
            return found
    return []


def _size(element: etree._Element) -> Size:
    return int(element.get("minLength", "0")), _int(element.get("maxLength"))


def _list_facts(element: etree._Element) -> ListFacts:
    return ListFacts(
        min_items=int(element.get("minItems", "0")),
        max_items=_int(element.get("maxItems")),
        sizes=tuple(_size(s) for s in element.findall("size")),
    )
