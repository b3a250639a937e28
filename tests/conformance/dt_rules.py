"""The rules of a TR-106 device-type (DT) document that neither the schemas nor bbfreport check.

A DT may only restrict the DM model it imports: everything it lists must exist there, with
access never wider, entry counts within the model's, the model's data type (facets may only
narrow it) and no default where the model defines one; its import must name the DM
document's ``spec``. :func:`violations` returns one line per breach.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from tests.conformance.bbf_reference import (
    BASE_TYPES,
    ArgumentObjectFacts,
    DataModelDocument,
    ParameterFacts,
    parse_xml,
    read_bytes,
)

OBJECT_ACCESS = {"readOnly": {"readOnly"}, "readWrite": {"readOnly", "create", "delete", "createDelete"}}
PARAMETER_ACCESS = {"readOnly": {"readOnly"}, "writeOnceReadOnly": {"readOnly"}, "readWrite": {"readOnly", "readWrite"}}


def _count(text: str | None) -> float:
    """A DT attribute (maxEntries, maxLength) as a number; "unbounded" or absent is infinite."""
    return float("inf") if text in (None, "unbounded") else int(text)


def _limit(value: int | None) -> float:
    """A model's upper bound as a number; None (unbounded) is infinite."""
    return float("inf") if value is None else value


def _entries(where: str, element: etree._Element, model_min: int, model_max: int | None) -> list[str]:
    low, high = _count(element.get("minEntries")), _count(element.get("maxEntries"))
    problems = []
    if low < model_min:
        problems.append(f"{where}: minEntries {element.get('minEntries')} is below the model's {model_min}")
    if high > _limit(model_max):
        problems.append(f"{where}: maxEntries {element.get('maxEntries')} is above the model's {model_max}")
    if low > high:
        problems.append(f"{where}: minEntries is above maxEntries")
    return problems


def _syntax(where: str, syntax: etree._Element | None, model: ParameterFacts) -> list[str]:
    if syntax is None:
        return []
    problems = []
    mtype = model.type
    if syntax.find("default") is not None and model.default is not None:
        problems.append(f"{where}: states a default, but the model already has one ({model.default!r})")
    if (syntax.find("list") is not None) != (mtype.list is not None):
        problems.append(f"{where}: list-ness differs from the model's")
    ref = syntax.find("dataType")
    primitive = next((c for c in syntax if c.tag in BASE_TYPES), None)
    if ref is not None and (ref.get("ref") or ref.get("base")) != mtype.name:
        problems.append(f"{where}: data type {ref.get('ref') or ref.get('base')} is not the model's {mtype.name!r}")
    facets = ref if ref is not None else primitive
    if primitive is not None and primitive.tag != mtype.base:
        problems.append(f"{where}: base type {primitive.tag} is not the model's {mtype.base}")
    if facets is None:
        return problems
    foreign = {e.get("value") for e in facets.findall("enumeration")} - set(mtype.enumerations)
    if mtype.enumerations and foreign:
        problems.append(f"{where}: enumeration values {sorted(foreign)} are not the model's")
    for size in facets.findall("size"):
        widest = max((_limit(s[1]) for s in mtype.sizes), default=float("inf"))
        if _count(size.get("maxLength")) > widest:
            problems.append(f"{where}: maxLength {size.get('maxLength')} widens the model's {widest:g}")
    for rng in facets.findall("range"):
        low, high = rng.get("minInclusive"), rng.get("maxInclusive")
        inside = not mtype.ranges or any(
            (m_low is None or (low is not None and int(low) >= m_low))
            and (m_high is None or (high is not None and int(high) <= m_high))
            for m_low, m_high, _step in mtype.ranges
        )
        if not inside:
            problems.append(f"{where}: range {low}..{high} is not within the model's {mtype.ranges}")
    return problems


def _arguments(
    where: str,
    container: etree._Element,
    params: dict[str, ParameterFacts],
    objects: dict[str, ArgumentObjectFacts],
    prefix: str = "",
) -> list[str]:
    problems = []
    for child in container:
        name = prefix + (child.get("ref") or "")
        if child.tag == "parameter":
            if name not in params:
                problems.append(f"{where}: argument {name} does not exist in the model")
            else:
                problems += _syntax(f"{where} {name}", child.find("syntax"), params[name])
        elif child.tag == "object":
            if name not in objects:
                problems.append(f"{where}: argument object {name} does not exist in the model")
                continue
            model = objects[name]
            problems += _entries(f"{where} {name}", child, model.min_entries, model.max_entries)
            problems += _arguments(where, child, params, objects, name)
    return problems


def _object(dt_object: etree._Element, dm: DataModelDocument) -> list[str]:
    path = dt_object.get("ref")
    if path not in dm.object_paths():
        return [f"{path}: object does not exist in the model"]
    model = dm.object(path)
    problems = []
    if dt_object.get("access") not in OBJECT_ACCESS[model.access]:
        problems.append(f"{path}: access {dt_object.get('access')} is wider than the model's {model.access}")
    problems += _entries(path, dt_object, model.min_entries, model.max_entries)
    for child in dt_object:
        name, where = child.get("ref"), f"{path}{child.get('ref')}"
        if child.tag == "parameter":
            if name not in model.parameters:
                problems.append(f"{where}: parameter does not exist in the model")
                continue
            parameter = model.parameters[name]
            if child.get("access") not in PARAMETER_ACCESS[parameter.access]:
                problems.append(f"{where}: access {child.get('access')} is wider than the model's {parameter.access}")
            problems += _syntax(where, child.find("syntax"), parameter)
        elif child.tag == "command":
            if name not in model.commands:
                problems.append(f"{where}: command does not exist in the model")
                continue
            command = model.commands[name]
            for tag, params, objects in (
                ("input", command.inputs, command.input_objects),
                ("output", command.outputs, command.output_objects),
            ):
                for container in child.findall(tag):
                    problems += _arguments(f"{where} {tag}", container, params, objects)
        elif child.tag == "event":
            if name not in model.events:
                problems.append(f"{where}: event does not exist in the model")
                continue
            event = model.events[name]
            problems += _arguments(where, child, event.arguments, event.objects)
    return problems


def violations(dt_path: Path) -> list[str]:
    """Every breach of the DT rules by the DT document at ``dt_path`` (its imports beside it)."""
    root = parse_xml(read_bytes(dt_path))
    problems = []
    models: dict[str, DataModelDocument] = {}
    for imported in root.findall("import"):
        file = imported.get("file")
        dm = DataModelDocument.load(dt_path.parent / file)
        if imported.get("spec") != dm.spec:
            problems.append(f"import {file}: spec {imported.get('spec')} is not the document's {dm.spec}")
        for model in imported.findall("model"):
            if model.get("name") != dm.model_name:
                problems.append(f"import {file}: it has no model {model.get('name')}")
            models[model.get("name")] = dm
    for model in root.findall("model"):
        dm = models.get(model.get("ref"))
        if dm is None:
            problems.append(f"model {model.get('ref')} is not imported")
            continue
        # model-level parameters are not used by TR-181 DTs and not checked here: refuse them
        problems += [f"parameter {p.get('ref')} outside any object" for p in model.findall("parameter")]
        for dt_object in model.findall("object"):
            problems += _object(dt_object, dm)
    return problems
