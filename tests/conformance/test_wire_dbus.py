"""The served model as a D-Bus client sees it, compared fact by fact with the BBF USP XML.

The real data model is served by the D-Bus front end on a private ``dbus-daemon``; the
answer is read by ``gdbus call`` — another process — so everything between the tree and
the wire (dsm_tr181/buses/dbus_supported.py, the D-Bus layer) is under test, not only the
in-process model (test_served_model.py). Compared: every object's access, multi-instance
flag and unique-key sets; every parameter's access and USP value type; every command's
type (sync/async) and argument names; every event's argument names. The expected side is
the same BBF reading as test_served_model.py (:mod:`bbf_reference`), with the same scope.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from dsm_tr181.buses.dbus import DbusProvider
from dsm_tr181.buses.dbus_interface import INTERFACE
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel
from tests.conformance import facts
from tests.conformance.test_served_model import CWMP_ONLY, VENDOR_PREFIX, bbf_items, expected  # noqa: F401 (fixtures)
from tests.support.dbusdaemon import gdbus_call, private_bus
from tests.support.loopthread import LoopThread

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("dbus-daemon", "gdbus")),
        reason="needs dbus-daemon and gdbus (Debian packages dbus, libglib2.0-bin)",
    ),
]

SM = "Device.SoftwareModules."
NAME = "com.rdkcentral.DSM"
PATH = "/com/rdkcentral/DSM"


@pytest.fixture(scope="module")
def answer() -> Iterator[dict[str, Any]]:
    """GetSupportedDM("Device.") as a gdbus client reads it from the D-Bus front end."""
    loop = LoopThread()
    try:
        with private_bus() as bus:
            dm = loop.call(lambda: DataModel(load_schema()))
            # As the LCM does: one computed parameter, one sampled quietly.
            loop.call(lambda: dm.on_get(SM + "ExecutionUnit.{i}.Uptime", lambda node: 0))
            loop.call(lambda: dm.never_announced(SM + "ExecutionUnit.{i}.MemoryInUse"))
            provider = DbusProvider.create(dm, {"bus": bus.address, "call_timeout": 10}, loop.loop)
            loop.wait(provider.start())
            try:
                reply = gdbus_call(bus.address, NAME, PATH, f"{INTERFACE}.GetSupportedDM", "['Device.']", "false")
            finally:
                loop.wait(provider.close())
    finally:
        loop.stop()
    text = reply.strip()
    assert text.startswith("('") and text.endswith("',)"), text[:200]
    yield json.loads(text[2:-3].encode().decode("unicode_escape"))


def wire_items(answer: dict[str, Any]) -> facts.Items:
    items: facts.Items = {}
    for result in answer["req_obj_results"]:
        for obj in result["supported_objs"]:
            path = obj["supported_obj_path"]
            items[path] = {
                "gsdm_access": obj["access"],
                "multi_instance": obj["is_multi_instance"],
                "unique_key_names": sorted(tuple(k["key_names"]) for k in obj.get("unique_key_sets", [])),
            }
            for param in obj.get("supported_params", []):
                items[path + param["param_name"]] = {"gsdm_access": param["access"], "value_type": param["value_type"]}
            for command in obj.get("supported_commands", []):
                items[path + command["command_name"]] = {
                    "command_type": command["command_type"],
                    "input": sorted(command.get("input_arg_names", [])),
                    "output": sorted(command.get("output_arg_names", [])),
                }
            for event in obj.get("supported_events", []):
                items[path + event["event_name"]] = {"arguments": sorted(event.get("arg_names", []))}
    return {k: v for k, v in items.items() if VENDOR_PREFIX not in k}


def expected_on_the_wire(expected: facts.Items) -> facts.Items:  # noqa: F811
    """The BBF USP facts a GetSupportedDM answer carries (D-Bus serves the USP flavour: not the
    CWMP-only parameters the product's document adds); argument items folded into their
    command/event."""
    items: facts.Items = {}
    for key, value in expected.items():
        if key.partition(" ")[0] in CWMP_ONLY:
            continue
        head, _, rest = key.partition(" ")
        if rest:
            tag, _, name = rest.partition(" ")
            if not name.endswith("."):  # argument objects are not named on the wire, their parameters are
                items[head].setdefault("arguments" if tag == "argument" else tag, []).append(name)
            continue
        if "command_type" in value:
            items[key] = {"command_type": value["command_type"], "input": [], "output": []}
        elif key.endswith("!"):
            items[key] = {"arguments": []}
        elif key.endswith("."):
            names = sorted(tuple(names) for names, _functional in value["unique_keys"])
            items[key] = {"gsdm_access": value["gsdm_access"], "multi_instance": value["multi_instance"],
                          "unique_key_names": names}  # fmt: skip
        else:
            items[key] = {"gsdm_access": value["gsdm_access"], "value_type": value["value_type"]}
    for value in items.values():
        for tag in ("input", "output", "arguments"):
            if tag in value:
                value[tag] = sorted(value[tag])
    return items


def test_get_supported_dm_over_d_bus_equals_the_bbf_xml(answer: dict[str, Any], expected: facts.Items) -> None:  # noqa: F811
    served = wire_items(answer)
    want = expected_on_the_wire(expected)
    problems = facts.differences(served, want, "D-Bus GetSupportedDM", "BBF XML")
    assert problems == [], "\n".join(problems[:40])
    assert len(served) == len(want) > 150


def _mutated(answer: dict[str, Any], change: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(answer))
    for obj in copy["req_obj_results"][0]["supported_objs"]:
        if change == "signers-read-only" and obj["supported_obj_path"] == SM + "ExecEnv.{i}.":
            for param in obj["supported_params"]:
                if param["param_name"] == "Signers":
                    param["access"] = "PARAM_READ_ONLY"
        if change == "reset-sync" and obj["supported_obj_path"] == SM + "ExecEnv.{i}.":
            for command in obj["supported_commands"]:
                if command["command_name"] == "Reset()":
                    command["command_type"] = "CMD_SYNC"
        if change == "no-unique-keys":
            obj["unique_key_sets"] = []
        if change == "cwmp-only-served" and obj["supported_obj_path"] == SM + "ExecutionUnit.{i}.":
            obj["supported_params"].append(
                {"param_name": "RequestedState", "access": "PARAM_READ_WRITE", "value_type": "PARAM_STRING"}
            )
    return copy


@pytest.mark.parametrize("change", ["signers-read-only", "reset-sync", "no-unique-keys", "cwmp-only-served"])
def test_the_comparison_catches_what_a_wrong_front_end_would_answer(
    answer: dict[str, Any],
    expected: facts.Items,  # noqa: F811
    change: str,
) -> None:
    problems = facts.differences(wire_items(_mutated(answer, change)), expected_on_the_wire(expected), "D-Bus", "BBF")
    assert problems, change


def test_get_supported_dm_names_the_bbf_model_and_says_which_values_notify(answer: dict[str, Any], usp: Any) -> None:
    (result,) = answer["req_obj_results"]
    assert result["data_model_inst_uri"] == usp.spec == "urn:broadband-forum-org:tr-181-2-19-1-usp"
    changes = {
        obj["supported_obj_path"] + p["param_name"]: p["value_change"]
        for obj in result["supported_objs"]
        for p in obj["supported_params"]
    }
    assert set(changes.values()) == {"VALUE_CHANGE_ALLOWED", "VALUE_CHANGE_WILL_IGNORE"}
    eu = SM + "ExecutionUnit.{i}."
    assert changes[eu + "Uptime"] == changes[eu + "MemoryInUse"] == "VALUE_CHANGE_WILL_IGNORE"
    assert changes[eu + "Status"] == changes[SM + "ExecEnv.{i}.Signers"] == "VALUE_CHANGE_ALLOWED"
