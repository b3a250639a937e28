"""Load BBF data-model XML (cwmp-datamodel 1.x) into :mod:`dsm_tr181.schema.model` objects.

The only module of the product that touches XML. It reads the DM documents of a
directory (device-type documents are skipped), resolves named data types along their
``base`` chain, resolves ``pathRef`` target parents (TR-106 relative paths) to absolute
schema paths, and links objects into a tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from lxml import etree

from dsm_tr181.schema.documents import SchemaError
from dsm_tr181.schema.model import Access, ArgumentObject, Command, Event, Object, Parameter, Schema, UniqueKey
from dsm_tr181.schema.types import BaseType, DataType, ListFacet, PathRef, Range, RefType, Size

DM_NAMESPACE_PREFIX = "urn:broadband-forum-org:cwmp:datamodel-"
DT_NAMESPACE_PREFIX = "urn:broadband-forum-org:cwmp:devicetype-"
GONE = ("obsoleted", "deleted")


def parse_directory(directory: Path, extensions: Sequence[Path] = ()) -> Schema:
    """What the product serves: the DM documents of ``directory``, reduced to what its
    device-type documents list, plus the objects of the vendor-extension DM documents
    ``extensions`` (served whole: they are the product's own)."""
    kinds = {path: _document_kind(path) for path in sorted(directory.glob("*.xml"))}
    documents = [path for path, kind in kinds.items() if kind.startswith(DM_NAMESPACE_PREFIX)]
    if not documents:
        raise SchemaError(f"no BBF data-model document in {directory}")
    schema = load_documents([*documents, *extensions])
    keep = frozenset(obj.get("name") for path in extensions for obj in _parse(path).iter("object"))
    for path, kind in kinds.items():
        if kind.startswith(DT_NAMESPACE_PREFIX):
            apply_device_type(schema, path, keep)
    return schema


def load_documents(paths: Iterable[Path]) -> Schema:
    builder = _Builder()
    for path in paths:
        builder.add_document(path)
    return builder.finish()


def apply_device_type(schema: Schema, path: Path, keep: frozenset[str] = frozenset()) -> None:
    """Keep only the objects, parameters, commands and events a DT document lists (and the
    objects in ``keep``), with the DT's narrower access (a DT says readOnly where the model's
    Alias is writeOnceReadOnly: that stays)."""
    root = _parse(path)
    listed: dict[str, etree._Element] = {
        obj.get("ref"): obj for model in root.findall("model") for obj in model.findall("object")
    }
    for obj_path in list(schema.objects)[1:]:  # the root object stays
        if obj_path in keep:
            continue
        element = listed.get(obj_path)
        obj = schema.objects[obj_path]
        if element is None:
            del schema.objects[obj_path]
            if obj.parent is not None:
                obj.parent.children.pop(obj.name, None)
            continue
        params = {p.get("ref"): p for p in element.findall("parameter")}
        for name in list(obj.parameters):
            if name not in params:
                del obj.parameters[name]
            elif params[name].get("access") == "readOnly" and obj.parameters[name].access is Access.READ_WRITE:
                obj.parameters[name].access = Access.READ_ONLY
        commands = {c.get("ref") for c in element.findall("command")}
        obj.commands = {name: c for name, c in obj.commands.items() if name in commands}
        events = {e.get("ref") for e in element.findall("event")}
        obj.events = {name: e for name, e in obj.events.items() if name in events}


def _parse(path: Path) -> etree._Element:
    return etree.parse(str(path), etree.XMLParser(remove_comments=True, no_network=True)).getroot()


def _document_kind(path: Path) -> str:
    """The namespace of a document's root element."""
    for _event, element in etree.iterparse(str(path), events=("start",)):
        return etree.QName(element).namespace or ""
    return ""


def _int(text: str | None, default: int | None = None) -> int | None:
    if text is None or text == "unbounded":
        return default
    return int(text)


class _Builder:
    def __init__(self) -> None:
        self.data_types: dict[str, DataType] = {}
        self.objects: dict[str, Object] = {}
        self.spec = ""
        self.model = ""
        # (parameter, pathRef element, base levels per candidate) resolved once all objects exist
        self.pending_refs: list[tuple[Parameter, etree._Element, list[list[str]]]] = []

    # -- documents -----------------------------------------------------------------------

    def add_document(self, path: Path) -> None:
        parser = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True)
        root = etree.parse(str(path), parser).getroot()
        self.spec = self.spec or root.get("spec", "")
        for element in root:
            if element.tag == "dataType":
                self._data_type(element)
            elif element.tag == "model":
                self.model = self.model or element.get("name", "")
                for obj in element.findall("object"):
                    self._object(obj)

    def finish(self) -> Schema:
        for obj in self.objects.values():
            parent_path = _parent_object_path(obj.path)
            if parent_path is not None:
                parent = self.objects.get(parent_path)
                if parent is None:
                    raise SchemaError(f"{obj.path} has no parent object {parent_path}")
                obj.parent = parent
                parent.children[obj.name] = obj
        for parameter, element, candidates in self.pending_refs:
            parameter.type = replace(parameter.type, path_ref=self._path_ref(element, candidates))
        return Schema(spec=self.spec, model=self.model, objects=self.objects, data_types=self.data_types)

    # -- data types ------------------------------------------------------------------------

    def _data_type(self, element: etree._Element) -> None:
        name = element.get("name")
        base_name = element.get("base")
        if base_name:
            base = self._named(base_name, element)
            dtype = self._facets(element, base)
        else:
            dtype = self._type_element(element)
        self.data_types[name] = replace(dtype, name=name, chain=(name, *dtype.chain))

    def _named(self, name: str, context: etree._Element) -> DataType:
        try:
            return self.data_types[name]
        except KeyError:
            raise SchemaError(f"line {context.sourceline}: unknown data type {name!r}") from None

    def _type_element(self, container: etree._Element) -> DataType:
        """The type described by the first type child of ``container`` (a syntax or dataType)."""
        list_facet: ListFacet | None = None
        for child in container:
            if child.tag == "list":
                sizes = tuple(self._size(s) for s in child.findall("size"))
                list_facet = ListFacet(
                    min_items=_int(child.get("minItems"), 0) or 0,
                    max_items=_int(child.get("maxItems")),
                    sizes=sizes,
                )
            elif child.tag == "dataType":
                dtype = self._facets(child, self._named(child.get("ref"), child))
                return replace(dtype, list=list_facet or dtype.list)
            elif child.tag in {b.value for b in BaseType}:
                return self._facets(child, DataType(BaseType(child.tag)), list_facet=list_facet)
            elif child.tag in ("decimal",):
                raise SchemaError(f"line {child.sourceline}: type {child.tag} is not supported")
        raise SchemaError(f"line {container.sourceline}: no type given")

    def _facets(self, element: etree._Element, base: DataType, list_facet: ListFacet | None = None) -> DataType:
        """``base`` narrowed by the facet children of ``element``."""
        sizes = tuple(self._size(s) for s in element.findall("size"))
        ranges = tuple(
            Range(_int(r.get("minInclusive")), _int(r.get("maxInclusive")), _int(r.get("step"), 1) or 1)
            for r in element.findall("range")
        )
        enums = tuple(e.get("value") for e in element.findall("enumeration") if e.get("status") not in GONE)
        patterns = tuple(p.get("value") for p in element.findall("pattern"))
        units = element.find("units")
        return replace(
            base,
            sizes=sizes or base.sizes,
            ranges=ranges or base.ranges,
            enumerations=enums or base.enumerations,
            patterns=patterns or base.patterns,
            units=units.get("value") if units is not None else base.units,
            list=list_facet or base.list,
        )

    @staticmethod
    def _size(element: etree._Element) -> Size:
        return Size(_int(element.get("minLength")), _int(element.get("maxLength")))

    # -- objects -----------------------------------------------------------------------------

    def _object(self, element: etree._Element) -> None:
        path = element.get("name")
        if element.get("status") in GONE:
            return
        obj = Object(
            path=path,
            access=Access(element.get("access", "readOnly")),
            min_entries=_int(element.get("minEntries"), 1) or 0,
            max_entries=_int(element.get("maxEntries", "1")),
            enable_parameter=element.get("enableParameter", ""),
            num_entries_parameter=element.get("numEntriesParameter", ""),
            status=element.get("status", "current"),
            version=element.get("version", ""),
        )
        obj.unique_keys = tuple(
            UniqueKey(tuple(p.get("ref") for p in key.findall("parameter")), key.get("functional", "true") == "true")
            for key in element.findall("uniqueKey")
        )
        levels = _levels(path)
        for child in element.findall("parameter"):
            if child.get("status") not in GONE:
                parameter = self._parameter(child, path + child.get("name"), [levels])
                obj.parameters[parameter.name] = parameter
        for child in element.findall("command"):
            if child.get("status") not in GONE:
                command = self._command(child, path, levels)
                obj.commands[command.name] = command
        for child in element.findall("event"):
            if child.get("status") not in GONE:
                event = self._event(child, path, levels)
                obj.events[event.name] = event
        self.objects[path] = obj

    def _parameter(
        self, element: etree._Element, path: str, candidates: list[list[str]], relative: str = ""
    ) -> Parameter:
        syntax = element.find("syntax")
        if syntax is None:
            raise SchemaError(f"line {element.sourceline}: parameter {path} has no syntax")
        dtype = self._type_element(syntax)
        default = syntax.find("default")
        parameter = Parameter(
            name=relative + element.get("name"),
            path=path,
            type=dtype,
            access=Access(element.get("access", "readOnly")),
            default=default.get("value") if default is not None else None,
            hidden=syntax.get("hidden") == "true",
            secured=syntax.get("secured") == "true",
            command=syntax.get("command") == "true",
            mandatory=element.get("mandatory") == "true",
            status=element.get("status", "current"),
            version=element.get("version", ""),
        )
        ref = next((r for r in syntax.iter("pathRef")), None)
        if ref is not None:
            self.pending_refs.append((parameter, ref, candidates))
        return parameter

    def _arguments(
        self,
        container: etree._Element | None,
        owner_path: str,
        candidates: list[list[str]],
        params: dict[str, Parameter],
        objects: dict[str, ArgumentObject],
        prefix: str = "",
    ) -> None:
        """Flatten the parameters of an input/output/event, sub-objects included ("Fault.FaultCode")."""
        if container is None:
            return
        for child in container:
            if child.get("status") in GONE:
                continue
            if child.tag == "parameter":
                parameter = self._parameter(child, owner_path + "." + prefix + child.get("name"), candidates, prefix)
                params[parameter.name] = parameter
            elif child.tag == "object":
                name = prefix + child.get("name")
                objects[name] = ArgumentObject(
                    name=name,
                    multi_instance=name.endswith("{i}."),
                    min_entries=_int(child.get("minEntries"), 1) or 0,
                    max_entries=_int(child.get("maxEntries", "1")),
                )
                nested = [c + _levels(child.get("name")) for c in candidates]
                self._arguments(child, owner_path, nested, params, objects, name)

    def _command(self, element: etree._Element, obj_path: str, levels: list[str]) -> Command:
        name = element.get("name")
        command = Command(
            name=name,
            path=obj_path + name,
            is_async=element.get("async") == "true",
            status=element.get("status", "current"),
            version=element.get("version", ""),
        )
        # BBF authors count relative paths in arguments from the command, or from an
        # extra Input/Output level; both are tried when the reference is resolved.
        for tag, params, objects in (
            ("input", command.inputs, command.input_objects),
            ("output", command.outputs, command.output_objects),
        ):
            candidates = [[*levels, name], [*levels, name, tag.title()]]
            self._arguments(element.find(tag), command.path, candidates, params, objects)
        return command

    def _event(self, element: etree._Element, obj_path: str, levels: list[str]) -> Event:
        name = element.get("name")
        event = Event(
            name=name,
            path=obj_path + name,
            status=element.get("status", "current"),
            version=element.get("version", ""),
        )
        self._arguments(element, event.path, [[*levels, name]], event.arguments, event.objects)
        return event

    # -- references ------------------------------------------------------------------------------

    def _path_ref(self, element: etree._Element, candidates: list[list[str]]) -> PathRef:
        parents: list[str] = []
        for target in (element.get("targetParent") or "").split():
            resolutions = [_resolve(target, levels) for levels in candidates]
            known = [r for r in resolutions if r in self.objects or r + "{i}." in self.objects]
            parents.append(known[0] if known else resolutions[0])
        return PathRef(
            ref_type=RefType(element.get("refType", "strong")),
            target_parents=tuple(parents),
            target_type=element.get("targetType", "any"),
            target_data_type=element.get("targetDataType", "any"),
        )


def _levels(path: str) -> list[str]:
    """Object names of a schema path, table placeholders dropped."""
    return [p for p in path.rstrip(".").split(".") if p and p != "{i}"]


def _resolve(target: str, levels: list[str]) -> str:
    """TR-106 relative path → absolute schema path (with its trailing dot)."""
    if target.startswith("#"):
        ups = len(target) - len(target.lstrip("#"))
        rest = target[ups:].lstrip(".")
        base = levels[:-ups] if ups else levels
        return ".".join(base) + "." + rest
    if target.startswith("."):
        return levels[0] + target
    if target.startswith(levels[0] + "."):
        return target
    return ".".join(levels) + "." + target


def _parent_object_path(path: str) -> str | None:
    trimmed = path[: -len("{i}.")] if path.endswith(".{i}.") else path
    parts = trimmed.rstrip(".").split(".")
    if len(parts) == 1:
        return None
    return ".".join(parts[:-1]) + "."
