"""Comparable facts about data-model items, from three sources.

Each source is reduced to ``{item key: {fact name: value}}`` with the same keys and fact
names: the product's served model (its GetSupportedDM answer plus the Schema for what USP
does not carry), the BBF XML read by :mod:`bbf_reference`, and ``softwaremodules.json``.
Item keys: ``<object path>`` for objects, ``<object path><name>`` for parameters, commands
and events, ``<command path> input|output <argument>`` and ``<event path> argument <argument>``
for arguments (argument objects end with a dot).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dsm_tr181.schema import Parameter, Schema
from dsm_tr181.schema.model import ArgumentObject
from dsm_tr181.tree.supported import SupportedObject, SupportedParam
from tests.conformance.bbf_reference import (
    GONE,
    ArgumentObjectFacts,
    DataModelDocument,
    ObjectFacts,
    ParameterFacts,
)

Facts = dict[str, Any]
Items = dict[str, Facts]
# USP ParamValueType per TR-106 base type (TR-369 usp-msg proto), stated here independently.
USP_VALUE_TYPES = {
    "string": "PARAM_STRING",
    "boolean": "PARAM_BOOLEAN",
    "int": "PARAM_INT",
    "unsignedInt": "PARAM_UNSIGNED_INT",
    "long": "PARAM_LONG",
    "unsignedLong": "PARAM_UNSIGNED_LONG",
    "dateTime": "PARAM_DATE_TIME",
    "base64": "PARAM_BASE_64",
    "hexBinary": "PARAM_HEX_BINARY",
}
NO_PATH_REF: Facts = {"ref_type": None, "target_type": None, "target_data_type": None, "target_parents": None}


def _entries(min_entries: int, max_entries: int | None) -> Facts:
    return {"min_entries": min_entries, "max_entries": max_entries}


# -- BBF XML ------------------------------------------------------------------------------------


def reference_parameter(p: ParameterFacts, argument: bool) -> Facts:
    t = p.type
    facts: Facts = {
        "value_type": USP_VALUE_TYPES[t.base],
        "base": t.base,
        "data_type": t.name,
        "chain": t.chain,
        "list": None if t.list is None else (t.list.min_items, t.list.max_items),
        "list_sizes": () if t.list is None else t.list.sizes,
        "sizes": t.sizes,
        "ranges": t.ranges,
        "enumerations": t.enumerations,
        "patterns": t.patterns,
        "units": t.units,
        "default": p.default,
        "hidden": p.hidden,
        "secured": p.secured,
        **NO_PATH_REF,
    }
    if t.path_ref is not None:
        ref = t.path_ref
        facts |= {"ref_type": ref.ref_type, "target_type": ref.target_type,
                  "target_data_type": ref.target_data_type, "target_parents": ref.target_parents}  # fmt: skip
    if argument:
        facts["mandatory"] = p.mandatory
    else:
        facts["access"] = p.access
        # USP has no writeOnceReadOnly; the product reports it (USP Alias) as read-only
        facts["gsdm_access"] = "PARAM_READ_WRITE" if p.access == "readWrite" else "PARAM_READ_ONLY"
    return facts


def _reference_arg_object(o: ArgumentObjectFacts) -> Facts:
    return {"multi_instance": o.name.endswith("{i}."), **_entries(o.min_entries, o.max_entries)}


def reference_object(obj: ObjectFacts, parameters: Iterable[str] | None = None, behaviour: bool = True) -> Items:
    """One object's items; ``parameters`` limits its parameters, ``behaviour`` keeps commands and events."""
    table = obj.path.endswith("{i}.")
    items: Items = {
        obj.path: {
            "access": obj.access,
            "gsdm_access": "OBJ_ADD_DELETE" if obj.access == "readWrite" and table else "OBJ_READ_ONLY",
            "multi_instance": table,
            "num_entries_parameter": obj.num_entries_parameter,
            "unique_keys": obj.unique_keys,
            **_entries(obj.min_entries, obj.max_entries),
        }
    }
    names = obj.parameters if parameters is None else parameters
    items |= {obj.path + n: reference_parameter(obj.parameters[n], argument=False) for n in names}
    if not behaviour:
        return items
    for name, command in obj.commands.items():
        path = obj.path + name
        items[path] = {"command_type": "CMD_ASYNC" if command.is_async else "CMD_SYNC"}
        for tag, params, objects in (
            ("input", command.inputs, command.input_objects),
            ("output", command.outputs, command.output_objects),
        ):
            items |= {f"{path} {tag} {n}": reference_parameter(p, argument=True) for n, p in params.items()}
            items |= {f"{path} {tag} {n}": _reference_arg_object(o) for n, o in objects.items()}
    for name, event in obj.events.items():
        path = obj.path + name
        items[path] = {}
        items |= {f"{path} argument {n}": reference_parameter(p, argument=True) for n, p in event.arguments.items()}
        items |= {f"{path} argument {n}": _reference_arg_object(o) for n, o in event.objects.items()}
    return items


def reference_parameter_item(doc: DataModelDocument, path: str) -> Items:
    obj, _, name = path.rpartition(".")
    return {path: reference_parameter(doc.object(obj + ".").parameters[name], argument=False)}


# -- the product -------------------------------------------------------------------------------


def _sizes(sizes: Iterable[Any]) -> tuple[tuple[int, int | None], ...]:
    return tuple((s.min or 0, s.max) for s in sizes)


def served_parameter(sp: SupportedParam, p: Parameter, argument: bool) -> Facts:
    t = sp.type
    facts: Facts = {
        "value_type": sp.value_type,
        "base": t.base.value,
        "data_type": t.name,
        "chain": t.chain,
        "list": None if t.list is None else (t.list.min_items, t.list.max_items),
        "list_sizes": () if t.list is None else _sizes(t.list.sizes),
        "sizes": _sizes(t.sizes),
        "ranges": tuple((r.min, r.max, r.step) for r in t.ranges),
        "enumerations": t.enumerations,
        "patterns": t.patterns,
        "units": t.units,
        "default": p.default,
        "hidden": p.hidden,
        "secured": p.secured,
        **NO_PATH_REF,
    }
    if t.path_ref is not None:
        ref = t.path_ref
        facts |= {"ref_type": ref.ref_type.value, "target_type": ref.target_type,
                  "target_data_type": ref.target_data_type, "target_parents": ref.target_parents}  # fmt: skip
    if argument:
        facts["mandatory"] = p.mandatory
    else:
        facts["access"] = p.access.value
        facts["gsdm_access"] = sp.access
    return facts


def _served_arg_object(o: ArgumentObject) -> Facts:
    return {"multi_instance": o.multi_instance, **_entries(o.min_entries, o.max_entries)}


def served_items(supported: list[SupportedObject], schema: Schema) -> Items:
    """The served model: what GetSupportedDM answers, completed from the Schema."""
    items: Items = {}
    for so in supported:
        obj = schema.objects[so.path]
        items[so.path] = {
            "access": obj.access.value,
            "gsdm_access": so.access,
            "multi_instance": so.is_multi_instance,
            "num_entries_parameter": obj.num_entries_parameter,
            "unique_keys": tuple(
                (tuple(names), key.functional) for names, key in zip(so.unique_key_sets, obj.unique_keys, strict=True)
            ),
            **_entries(obj.min_entries, obj.max_entries),
        }
        items |= {so.path + sp.name: served_parameter(sp, obj.parameters[sp.name], False) for sp in so.params}
        for sc in so.commands:
            command = obj.commands[sc.name]
            path = so.path + sc.name
            items[path] = {"command_type": sc.command_type}
            for tag, args, params, objects in (
                ("input", sc.input_args, command.inputs, command.input_objects),
                ("output", sc.output_args, command.outputs, command.output_objects),
            ):
                items |= {f"{path} {tag} {a.name}": served_parameter(a, params[a.name], True) for a in args}
                items |= {f"{path} {tag} {n}": _served_arg_object(o) for n, o in objects.items()}
        for se in so.events:
            event = obj.events[se.name]
            path = so.path + se.name
            items[path] = {}
            items |= {f"{path} argument {a.name}": served_parameter(a, event.arguments[a.name], True) for a in se.args}
            items |= {f"{path} argument {n}": _served_arg_object(o) for n, o in event.objects.items()}
    return items


# -- softwaremodules.json ----------------------------------------------------------------------


def _json_entries(entry: dict[str, Any]) -> Facts:
    low, high = entry["minEntries"], entry["maxEntries"]
    return _entries(int(low), None if high == "unbounded" else int(high))


def json_parameter(entry: dict[str, Any], argument: bool) -> Facts:
    """The facts softwaremodules.json states (it has no hidden/secured/targetDataType)."""
    syntax = entry["syntax"]
    base = syntax["type"]
    path_ref = syntax.get("pathRef")
    data_type = syntax.get("dataType", "")
    facts: Facts = {
        "value_type": USP_VALUE_TYPES[base],
        "base": base,
        "data_type": data_type,
        "chain": tuple(syntax.get("dataTypeChain", [data_type] if data_type else [])),
        "list": None if "list" not in syntax else (syntax["list"].get("minItems", 0), syntax["list"].get("maxItems")),
        "sizes": tuple((s.get("minLength", 0), s.get("maxLength")) for s in syntax.get("size", [])),
        "ranges": tuple(
            (r.get("minInclusive"), r.get("maxInclusive"), r.get("step", 1)) for r in syntax.get("range", [])
        ),
        "enumerations": tuple(e["value"] for e in syntax.get("enumeration", []) if e.get("status") not in GONE),
        "patterns": tuple(syntax.get("pattern", [])),
        "units": syntax.get("units", ""),
        "default": syntax["default"]["value"] if "default" in syntax else None,
        "ref_type": path_ref and path_ref["refType"],
        "target_type": path_ref and path_ref["targetType"],
        "target_parents": path_ref and tuple(path_ref.get("targetParentResolved", [])),
    }
    if argument:
        facts["mandatory"] = entry.get("mandatory") == "true"
    elif entry["access"] is not None:  # null where the XML has no access attribute
        facts["access"] = entry["access"]
    return facts


def _json_arguments(prefix: str, container: dict[str, Any] | None, items: Items, name_prefix: str = "") -> None:
    for entry in (container or {}).get("parameters", []):
        items[prefix + name_prefix + entry["name"]] = json_parameter(entry, argument=True)
    for entry in (container or {}).get("objects", []):
        name = name_prefix + entry["name"]
        items[prefix + name] = {"multi_instance": name.endswith("{i}."), **_json_entries(entry)}
        _json_arguments(prefix, entry, items, name)


def json_object(entry: dict[str, Any]) -> Items:
    path = entry["path"]
    items: Items = {
        path: {
            "access": entry["access"],
            "multi_instance": entry["multiInstance"],
            "num_entries_parameter": entry.get("numEntriesParameter", ""),
            "unique_keys": tuple((tuple(k["parameters"]), k["functional"]) for k in entry["uniqueKeys"]),
            **_json_entries(entry),
        }
    }
    items |= {path + p["name"]: json_parameter(p, argument=False) for p in entry["parameters"]}
    for command in entry["commands"]:
        items[command["path"]] = {"command_type": "CMD_ASYNC" if command["async_"] else "CMD_SYNC"}
        for tag in ("input", "output"):
            _json_arguments(f"{command['path']} {tag} ", command.get(tag), items)
    for event in entry["events"]:
        items[event["path"]] = {}
        _json_arguments(f"{event['path']} argument ", event["arguments"], items)
    return items


# -- comparison --------------------------------------------------------------------------------


def differences(actual: Items, expected: Items, actual_name: str, expected_name: str) -> list[str]:
    """One line per item missing on either side and per fact that differs (facts both sides state)."""
    lines = [f"{key}: in {expected_name}, not in {actual_name}" for key in expected if key not in actual]
    lines += [f"{key}: in {actual_name}, not in {expected_name}" for key in actual if key not in expected]
    for key in actual.keys() & expected.keys():
        for fact in actual[key].keys() & expected[key].keys():
            if actual[key][fact] != expected[key][fact]:
                lines.append(f"{key}: {fact} is {actual[key][fact]!r} in {actual_name}, "
                             f"{expected[key][fact]!r} in {expected_name}")  # fmt: skip
    return sorted(lines)


def fact_count(a: Items, b: Items) -> int:
    return sum(len(a[k].keys() & b[k].keys()) for k in a.keys() & b.keys())
