"""The served model as an rbus client sees it, compared fact by fact with the BBF USP XML.

The real data model is served by the rbus front end (dsm_tr181/buses/rbus.py) on a real
librbus and rtrouted, with one row in every table; the real ``rbuscli`` — another process —
reads it: element discovery (``getnames``: rbusElementInfo_get, every element's type and
access flags) and one typed partial get of ``Device.`` (every parameter's rbus value type).
Compared with the same expectation as the D-Bus wire test (:mod:`test_wire_dbus`, from
:mod:`test_served_model`: the BBF USP XML plus the flavour's CWMP-only parameters): every
object (table or not, rows addable), every parameter (writable, rbus type), every command
and event (present, invokable). rbus carries no command types, arguments or unique keys.

``-m rbus``: runs only with a real librbus (DSM_RBUS_LIBRARY, DSM_RTROUTED, rbuscli beside
rtrouted or DSM_RBUSCLI), in a private mount namespace (rbus's broker address is /tmp).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from dsm_tr181.buses.rbus import RbusProvider
from dsm_tr181.schema import Schema, load_schema
from dsm_tr181.tree.datamodel import DataModel
from tests.conformance import facts
from tests.conformance.test_served_model import VENDOR_PREFIX, bbf_items, expected  # noqa: F401 (fixtures)
from tests.support.loopthread import LoopThread
from tests.support.rtrouted import BrokerBusy, RbusTools, find_tools, parse_rbuscli, run_rbuscli, running_broker

TOOLS = find_tools()
pytestmark = [
    pytest.mark.conformance,
    pytest.mark.rbus,
    pytest.mark.skipif(isinstance(TOOLS, str), reason=str(TOOLS)),
    pytest.mark.skipif(not isinstance(TOOLS, str) and TOOLS.rbuscli is None, reason="no rbuscli beside rtrouted"),
]

SM = "Device.SoftwareModules."
# What a TR-106 base type travels as on rbus (rbuscli's type names); lists, base64 and
# hexBinary travel as their TR-106 text, as CCSP components carry them.
RBUS_TYPES = {
    "string": "string",
    "boolean": "boolean",
    "int": "int32",
    "unsignedInt": "uint32",
    "long": "int64",
    "unsignedLong": "uint64",
    "dateTime": "datetime",
    "base64": "string",
    "hexBinary": "string",
}
_ELEMENT = re.compile(
    r"Name  : (?P<name>\S+)\s+Type  : (?P<type>\S+)\s+Writable: ?\S*\s+Access Flags: (?P<flags>\d{6})"
)
_INSTANCE = re.compile(r"\.\d+\.")


def _one_row_everywhere(dm: DataModel, schema: Schema) -> None:
    """One row in every table, parents first, so that every parameter can be read."""
    for path in sorted((p for p in schema.objects if p.endswith("{i}.")), key=lambda p: p.count("{i}")):
        dm.add_row(path[: -len("{i}.")].replace("{i}", "1"), {})


@pytest.fixture(scope="module")
def read() -> Iterator[tuple[str, str]]:
    """What rbuscli prints for ``getnames Device. false`` and ``get Device.``."""
    assert isinstance(TOOLS, RbusTools)
    try:
        with running_broker(TOOLS):
            loop = LoopThread()
            schema = load_schema()
            dm = DataModel(schema)
            provider = RbusProvider.create(dm, {"library": str(TOOLS.library)}, loop.loop)
            try:
                loop.wait(provider.start())
                loop.call(_one_row_everywhere, dm, schema)
                loop.wait(provider.synced())
                yield run_rbuscli(TOOLS, "getnames", "Device.", "false").text, run_rbuscli(TOOLS, "get", "Device.").text
            finally:
                loop.wait(provider.close())
                loop.stop()
    except BrokerBusy as exc:
        pytest.skip(str(exc))


def rbus_items(names: str, values: str) -> facts.Items:
    """The facts an rbus client reads, keyed by the template paths (row numbers → ``{i}``)."""
    types = {_template(p.name): p.type for p in parse_rbuscli(values).parameters}
    items: facts.Items = {}
    for m in _ELEMENT.finditer(names):
        name, kind, flags = _template(m["name"]), m["type"], m["flags"]
        get, settable, add, remove, _subscribe, invoke = (flag == "1" for flag in flags)
        if kind == "Table":
            items[name + "{i}."] = {"multi_instance": True, "addable": add and remove}
        elif kind == "Object" and not name.endswith("{i}."):  # a row's own element: its table says it
            items[name] = {"multi_instance": False, "addable": False}
        elif kind == "Property":
            items[name] = {"readable": get, "writable": settable, "rbus_type": types.get(name)}
        elif kind in ("Method", "Event"):
            items[name] = {"invokable": invoke} if kind == "Method" else {}
    return {k: v for k, v in items.items() if VENDOR_PREFIX not in k}


def _template(name: str) -> str:
    while (templated := _INSTANCE.sub(".{i}.", name)) != name:
        name = templated
    return name


def expected_on_rbus(expected: facts.Items) -> facts.Items:  # noqa: F811
    """The BBF facts rbus can carry, stated from the XML's access and types.

    rbus registers only properties, tables, methods and events: an object is known by the
    names below it, so an object with nothing in it (``ExecutionUnit.{i}.Extensions.``) has
    no rbus element."""
    items: facts.Items = {}
    for key, value in expected.items():
        if " " in key:  # command/event arguments: rbus does not describe them
            continue
        if key.endswith(".") and not any(k.startswith(key) and " " not in k for k in expected if k != key):
            continue
        if "command_type" in value:
            items[key] = {"invokable": True}
        elif key.endswith("!"):
            items[key] = {}
        elif key.endswith("."):
            addable = value["gsdm_access"] == "OBJ_ADD_DELETE"
            items[key] = {"multi_instance": value["multi_instance"], "addable": addable}
        else:
            native = value["list"] is None
            items[key] = {"readable": True, "writable": value["gsdm_access"] == "PARAM_READ_WRITE",
                          "rbus_type": RBUS_TYPES[value["base"]] if native else "string"}  # fmt: skip
    return items


def test_rbus_discovery_and_typed_gets_equal_the_bbf_xml(read: tuple[str, str], expected: facts.Items) -> None:  # noqa: F811
    served = rbus_items(*read)
    want = expected_on_rbus(expected)
    problems = facts.differences(served, want, "rbus discovery", "BBF XML")
    compared = facts.fact_count(served, want)
    print(f"rbus vs BBF TR-181 2.19.1: {len(want)} items, {compared} facts compared, {len(problems)} mismatches")
    assert problems == [], "\n".join(problems[:40])
    assert len(served) == len(want) > 150 and compared > 400


def _mutated(names: str, values: str, change: str) -> tuple[str, str]:
    """What a wrong front end would make rbuscli print."""
    signers, reset = f"{SM}ExecEnv.1.Signers", f"{SM}ExecEnv.1.Reset()"
    if change == "signers-read-only":
        names = re.sub(rf"(Name  : {re.escape(signers)}\s+Type  : Property\s+Writable: )Writable(\s+Access Flags: )11",
                       r"\1ReadOnly\g<2>10", names)  # fmt: skip
    elif change == "reset-missing":
        element = rf"Element +\d+:\s+Name  : {re.escape(reset)}\s+Type  : Method\s+Writable: ?\s+Access Flags: \d+"
        names = re.sub(element, "", names)
    elif change == "run-level-int32":
        level = f"{SM}ExecEnv.1.InitialRunLevel"
        values = re.sub(rf"(Name  : {re.escape(level)}\s+Type  : )uint32", r"\1int32", values)
    return names, values


@pytest.mark.parametrize("change", ["signers-read-only", "reset-missing", "run-level-int32"])
def test_the_comparison_catches_what_a_wrong_rbus_front_end_would_serve(
    read: tuple[str, str],
    expected: facts.Items,  # noqa: F811
    change: str,
) -> None:
    mutated = _mutated(*read, change)
    assert mutated != read, change
    assert facts.differences(rbus_items(*mutated), expected_on_rbus(expected), "rbus", "BBF"), change
