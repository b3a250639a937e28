"""The model the product serves is TR-181 2.19.1 as the Broadband Forum publishes it.

The served side is the product's own GetSupportedDM answer for ``Device.`` (with the Schema
for what USP does not carry: defaults, exact access, entry counts); the expected side is
read from the vendored BBF full XML by the independent :mod:`bbf_reference`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from dsm_tr181.schema import Access, Schema, load_schema
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.supported import SupportedObject
from tests.conformance import facts
from tests.conformance.bbf_reference import DataModelDocument
from tests.conformance.conftest import PRODUCT_DM, PRODUCT_DT, VENDORED

pytestmark = pytest.mark.conformance
SM = "Device.SoftwareModules."
# Objects the product restates in part (datamodel/regenerate.py): the parameters kept
# (None: all) and whether commands and events are kept.
RESTATED_IN_PART: dict[str, tuple[tuple[str, ...] | None, bool]] = {
    "Device.": ((), False),
    "Device.DeviceInfo.": (("VendorConfigFileNumberOfEntries", "VendorLogFileNumberOfEntries"), False),
    "Device.DeviceInfo.VendorConfigFile.{i}.": (None, False),
    "Device.DeviceInfo.VendorLogFile.{i}.": (None, False),
    "Device.Security.": (("CertificateNumberOfEntries",), False),
    "Device.Security.Certificate.{i}.": (None, False),
}
# Vendor parameters (TR-106 3.3: X_<domain>_ prefix), defined by the product, not the BBF.
VENDOR_PREFIX = "X_RDKCENTRAL-COM_"
VENDOR_PARAMETERS = {
    f"{SM}DeploymentUnit.{{i}}.X_RDKCENTRAL-COM_SignedBy": "PARAM_READ_ONLY",
    f"{SM}ExecutionUnit.{{i}}.NetworkConfig.X_RDKCENTRAL-COM_NetworkMode": "PARAM_READ_ONLY",
}
# Input arguments of TR-181 2.20 the product serves ahead of its 2.19.1 model (checked on their own).
BACKPORTED = "NetworkConfig.ShareParentNetwork"
# Served from the CWMP flavour: TR-069 controllers reach the product through the RDK-B stack.
CWMP_ONLY = (
    f"{SM}ExecEnv.{{i}}.Reset",
    f"{SM}ExecEnv.{{i}}.RequestedRunLevel",
    f"{SM}ExecutionUnit.{{i}}.RequestedState",
    f"{SM}ExecutionUnit.{{i}}.SupportedDataModelList",
)
# softwaremodules.json lists these as writable (writable_parameters_usp) and gives them a
# null access, while the XML gives them no access attribute, which the DM schema defaults
# to readOnly. The XML is authoritative.
JSON_WRITABLE_QUIRKS = {
    f"{SM}ExecEnv.{{i}}.AvailableRoles",
    f"{SM}ExecEnv.{{i}}.AvailableUserRoles",
    f"{SM}DeploymentUnit.{{i}}.InternalController",
}
PROFILES = ("SM_ExecEnvs:1", "SM_DeployAndExecUnits:1", "SM_Baseline:1")


def dt_behaviour() -> set[str]:
    """Paths of the commands and events the DT says the product supports."""
    model = etree.parse(str(PRODUCT_DT)).getroot().find("model")
    return {
        obj.get("ref") + item.get("ref")
        for obj in model.findall("object")
        for item in obj
        if item.tag in ("command", "event")
    }


def _behaviour_path(key: str) -> str | None:
    """The command or event an item key belongs to ("X.Cmd() input A" -> "X.Cmd()")."""
    head = key.split(" ")[0]
    return head if head.endswith(("()", "!")) else None


@pytest.fixture(scope="module")
def bbf_items(usp: DataModelDocument, cwmp: DataModelDocument) -> facts.Items:
    """The BBF XML's definition of everything the product's DM document restates."""
    items: facts.Items = {}
    for path in usp.object_paths():
        if path.startswith(SM):
            items |= facts.reference_object(usp.object(path))
        elif path in RESTATED_IN_PART:
            parameters, behaviour = RESTATED_IN_PART[path]
            items |= facts.reference_object(usp.object(path), parameters, behaviour)
    for path in CWMP_ONLY:
        assert path not in items, f"{path} is in the USP flavour now"
        items |= facts.reference_parameter_item(cwmp, path)
    return items


@pytest.fixture(scope="module")
def expected(bbf_items: facts.Items) -> facts.Items:
    """What the product must serve: the BBF definitions, with the DT's commands and events only."""
    supported = dt_behaviour()
    return {k: v for k, v in bbf_items.items() if (b := _behaviour_path(k)) is None or b in supported}


def _standard(items: facts.Items) -> facts.Items:
    return {k: v for k, v in items.items() if VENDOR_PREFIX not in k and BACKPORTED not in k}


@pytest.fixture(scope="module")
def served(supported: list[SupportedObject], schema: Schema) -> facts.Items:
    """The served model but for its vendor parameters (checked on their own)."""
    return _standard(facts.served_items(supported, schema))


def test_vendor_parameters_are_the_named_ones_with_their_access(supported: list[SupportedObject]) -> None:
    vendor = {so.path + sp.name: sp.access for so in supported for sp in so.params if sp.name.startswith("X_")}
    assert vendor.keys() == VENDOR_PARAMETERS.keys()
    assert all(name.rpartition(".")[2].startswith(VENDOR_PREFIX) for name in vendor)
    assert vendor == VENDOR_PARAMETERS


def test_network_mode_inputs_are_served_on_install_and_update(schema: Schema) -> None:
    """2.20's ShareParentNetwork (boolean) and the vendor mode argument, on both commands."""
    install = schema.objects[SM].commands["InstallDU()"]
    update = schema.objects[f"{SM}DeploymentUnit.{{i}}."].commands["Update()"]
    for command in (install, update):
        share = command.inputs[BACKPORTED]
        assert share.type.base.value == "boolean" and not share.mandatory and share.default is None
        mode = command.inputs["NetworkConfig.X_RDKCENTRAL-COM_NetworkMode"]
        assert mode.type.enumerations == ("Bridged", "None", "ShareParent")
    extra = {name for name in install.inputs if BACKPORTED in name or VENDOR_PREFIX in name}
    assert extra == {BACKPORTED, "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode"}


@pytest.fixture(scope="module")
def sm_json() -> dict:
    return json.loads((VENDORED / "softwaremodules.json").read_text())


def _summary(items: facts.Items) -> str:
    kinds = {"objects": 0, "parameters": 0, "commands": 0, "command arguments": 0, "events": 0, "event arguments": 0}
    for key in items:
        if " input " in key or " output " in key:
            kinds["command arguments"] += 1
        elif " argument " in key:
            kinds["event arguments"] += 1
        elif key.endswith("."):
            kinds["objects"] += 1
        elif key.endswith("()"):
            kinds["commands"] += 1
        elif key.endswith("!"):
            kinds["events"] += 1
        else:
            kinds["parameters"] += 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items())


def test_served_model_equals_bbf(served: facts.Items, expected: facts.Items) -> None:
    mismatches = facts.differences(served, expected, "served model", "BBF XML")
    report = (
        f"served model vs BBF TR-181 2.19.1: {len(served.keys() | expected.keys())} items checked "
        f"({_summary(served.keys() | expected.keys())}), {facts.fact_count(served, expected)} facts compared, "
        f"{len(mismatches)} mismatches"
    )
    print(report)
    assert not mismatches, report + ":\n" + "\n".join(mismatches)


def test_served_objects_are_softwaremodules_and_the_restated_deviceinfo(
    supported: list[SupportedObject], usp: DataModelDocument
) -> None:
    wanted = [p for p in usp.object_paths() if p.startswith(SM) or p in RESTATED_IN_PART]
    assert [so.path for so in supported] == wanted


def test_bbf_facts_agree_with_softwaremodules_json(
    bbf_items: facts.Items, usp: DataModelDocument, cwmp: DataModelDocument, sm_json: dict
) -> None:
    from_json: facts.Items = {}
    for entry in sm_json["objects"]:
        from_json |= facts.json_object(entry)
    cwmp_objects = {o["path"]: o for o in sm_json["cwmp_variant"]["objects"]}
    for path in CWMP_ONLY:
        obj, _, name = path.rpartition(".")
        (entry,) = [p for p in cwmp_objects[obj + "."]["parameters"] if p["name"] == name]
        from_json[path] = facts.json_parameter(entry, argument=False)
    in_scope = {k: v for k, v in bbf_items.items() if k.startswith(SM)}
    mismatches = facts.differences(from_json, in_scope, "softwaremodules.json", "BBF XML")
    compared = facts.fact_count(from_json, in_scope)
    print(f"softwaremodules.json vs BBF XML: {len(from_json)} items, {compared} facts compared, "
          f"{len(mismatches)} mismatches; known quirks: {sorted(JSON_WRITABLE_QUIRKS)} listed as writable")  # fmt: skip
    assert not mismatches, "\n".join(mismatches)

    null_access = {o["path"] + p["name"] for o in sm_json["objects"] for p in o["parameters"] if p["access"] is None}
    assert null_access == JSON_WRITABLE_QUIRKS
    for flavour, doc in (("usp", usp), ("cwmp", cwmp)):
        writable = {
            path + name
            for path in doc.object_paths()
            if path.startswith(SM)
            for name, p in doc.object(path).parameters.items()
            if p.access in ("readWrite", "writeOnceReadOnly")
        }
        listed = set(sm_json[f"writable_parameters_{flavour}"])
        quirks = JSON_WRITABLE_QUIRKS if flavour == "usp" else set()
        assert (listed - writable, writable - listed) == (quirks, set()), flavour


def test_cwmp_profiles_are_served_and_supported_with_their_access(
    cwmp: DataModelDocument, schema: Schema, sm_json: dict
) -> None:
    dt_model = etree.parse(str(PRODUCT_DT)).getroot().find("model")
    dt_objects = {o.get("ref"): o for o in dt_model.findall("object")}
    problems: list[str] = []
    checked = 0
    for name in PROFILES:
        profile = cwmp.profile(name)
        json_profile = next(p for p in sm_json["profiles"]["cwmp"] if p["name"] == name)
        assert {o["ref"]: (o["requirement"], {p["ref"]: p["requirement"] for p in o["parameters"]})
                for o in json_profile["objects"]} == profile.objects, name  # fmt: skip
        for path, (requirement, params) in profile.objects.items():
            checked += 1
            obj, dt_object = schema.objects.get(path), dt_objects.get(path)
            if obj is None or dt_object is None:
                problems.append(f"{name}: object {path} is not served and supported (DT)")
                continue
            if requirement != "present":  # create/delete need a creatable table
                problems.append(f"{name}: {path} requires {requirement}, the DT states {dt_object.get('access')}")
            dt_params = {p.get("ref"): p.get("access") for p in dt_object.findall("parameter")}
            for param, needed in params.items():
                checked += 1
                served = obj.parameters.get(param)
                if served is None or param not in dt_params:
                    problems.append(f"{name}: {path}{param} is not served and supported (DT)")
                elif needed == "readWrite" and (served.access is not Access.READ_WRITE or dt_params[param] != needed):
                    problems.append(f"{name}: {path}{param} must be writable")
    print(f"CWMP profiles {', '.join(PROFILES)}: {checked} objects and parameters checked")
    assert not problems, "\n".join(problems)


def test_comparison_catches_each_kind_of_divergence(expected: facts.Items, tmp_path: Path) -> None:
    # The same comparison over a served model loaded from a doctored copy of the product's
    # DM document must report each doctored fact, and nothing else.
    root = etree.parse(str(PRODUCT_DM)).getroot()
    obj = {o.get("name"): o for o in root.find("model").findall("object")}
    eu, ee, du = (obj[f"{SM}{name}.{{i}}."] for name in ("ExecutionUnit", "ExecEnv", "DeploymentUnit"))
    eu.find("parameter[@name='EUID']/syntax/string/size").set("maxLength", "65")
    status = ee.find("parameter[@name='Status']/syntax/string")
    status.remove(status.find("enumeration[@value='Restarting']"))
    obj[SM].find("command[@name='InstallDU()']").set("async", "false")
    du.find("parameter[@name='ExecutionEnvRef']/syntax/string/pathRef").set("targetParent", "#.ExecEnvClass.")
    du.remove(du.find("parameter[@name='Vendor']"))
    obj[f"{SM}ExecutionUnit.{{i}}.AutoRestart."].find("parameter[@name='Enable']/syntax/default").set("value", "true")
    eu.find("uniqueKey").set("functional", "false")
    etree.ElementTree(root).write(str(tmp_path / PRODUCT_DM.name))
    (tmp_path / PRODUCT_DT.name).write_bytes(PRODUCT_DT.read_bytes())

    schema = load_schema(tmp_path)
    doctored = _standard(facts.served_items(DataModel(schema).get_supported_dm(["Device."])["Device."], schema))
    lines = facts.differences(doctored, expected, "doctored", "BBF XML")
    found = {line.split(" is ")[0].split(" in ")[0] for line in lines}
    assert found == {
        f"{SM}ExecutionUnit.{{i}}.EUID: sizes",
        f"{SM}ExecEnv.{{i}}.Status: enumerations",
        f"{SM}InstallDU(): command_type",
        f"{SM}DeploymentUnit.{{i}}.ExecutionEnvRef: target_parents",
        f"{SM}DeploymentUnit.{{i}}.Vendor:",
        f"{SM}ExecutionUnit.{{i}}.AutoRestart.Enable: default",
        f"{SM}ExecutionUnit.{{i}}.: unique_keys",
    }, "\n".join(lines)


def test_command_parameters_read_back_as_their_null_value(usp: DataModelDocument, cwmp: DataModelDocument) -> None:
    # TR-106 A.2.3.5 (DM schema syntax/@command): setting such a parameter triggers an
    # action; it is not configuration and MUST always read back as its type's null value.
    # All three are CWMP-only, served (see CWMP_ONLY): (value set, null value).
    cases = {
        f"{SM}ExecEnv.{{i}}.Reset": ("true", False),
        f"{SM}ExecEnv.{{i}}.RequestedRunLevel": ("5", 0),
        f"{SM}ExecutionUnit.{{i}}.RequestedState": ("Active", ""),
    }
    commands = {
        path + name
        for doc in (usp, cwmp)
        for path in doc.object_paths()
        if path.startswith(SM)
        for name, p in doc.object(path).parameters.items()
        if p.command
    }
    assert commands == cases.keys()
    model = DataModel(load_schema())
    rows = {table: model.add_row(table + ".") for table in {path.rpartition(".{i}.")[0] for path in cases}}
    read_back = {}
    for path, (value, _null) in cases.items():
        table, _, name = path.rpartition(".{i}.")
        instance = rows[table].path + name
        model.set({instance: value})
        read_back[path] = model.get_values([instance])[instance]
    expected = {path: null for path, (_value, null) in cases.items()}
    assert read_back == expected


def test_get_supported_dm_offers_what_the_dt_supports(supported: list[SupportedObject]) -> None:
    dt_model = etree.parse(str(PRODUCT_DT)).getroot().find("model")
    dt = {
        o.get("ref"): {(c.tag, c.get("ref")) for c in o if c.tag in ("parameter", "command", "event")}
        for o in dt_model.findall("object")
    }
    served = {
        so.path: {("parameter", p.name) for p in so.params}
        | {("command", c.name) for c in so.commands}
        | {("event", e.name) for e in so.events}
        for so in supported
        if so.path != "Device."  # the root: served for its children, no parameters
    }
    beyond = sorted(f"{path}{name}" for path, items in served.items() for _, name in items - dt.get(path, set()))
    assert served.keys() == dt.keys() and not beyond, f"served but not supported (DT): {beyond}"
