"""The device-type document states exactly what the product supports, and only what its model allows."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from lxml import etree

from dsm_tr181.schema import Access, Schema
from tests.conformance import dt_rules
from tests.conformance.bbf_reference import DataModelDocument
from tests.conformance.conftest import DATAMODEL, PRODUCT_DM, PRODUCT_DT

pytestmark = pytest.mark.conformance
SM = "Device.SoftwareModules."
# What the product supports beyond parameters (the list), stated independently of regenerate_dt.py.
SUPPORTED_COMMANDS_AND_EVENTS = {
    SM: {"InstallDU()", "DUStateChange!"},
    f"{SM}ExecEnv.{{i}}.": {"SetRunLevel()", "Reset()", "Restart()", "Restarted!"},
    f"{SM}DeploymentUnit.{{i}}.": {"Update()", "Uninstall()"},
    f"{SM}ExecutionUnit.{{i}}.": {"SetRequestedState()", "Restart()"},
}
# Command inputs the product does not act on, left out of the DT (stated independently too).
NOT_ACTED_ON = {
    "InstallDU()": {"RegisterTrustPaths", "NetworkConfig.AccessInterfaces"},
    "Update()": {"RegisterTrustPaths", "NetworkConfig.AccessInterfaces", "ModuleVersion"},
}
DEVICE_INFO_PARAMETERS = {"VendorConfigFileNumberOfEntries", "VendorLogFileNumberOfEntries"}
DEVICE_INFO_TABLES = {"Device.DeviceInfo.VendorConfigFile.{i}.", "Device.DeviceInfo.VendorLogFile.{i}."}
# The trust store ExecEnv.{i}.Signers references: the table, and its parent reduced to its count.
SECURITY_PARAMETERS = {"CertificateNumberOfEntries"}
SECURITY_TABLE = "Device.Security.Certificate.{i}."


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate_dt", DATAMODEL / "regenerate_dt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dt() -> etree._Element:
    return etree.parse(str(PRODUCT_DT)).getroot()


def test_dt_is_the_generator_output() -> None:
    assert _generator().build(PRODUCT_DM) == PRODUCT_DT.read_bytes(), "run python datamodel/regenerate_dt.py"


def test_dt_follows_the_rules_the_schemas_do_not_check() -> None:
    assert dt_rules.violations(PRODUCT_DT) == []


def test_dt_imports_the_product_model(dt: etree._Element, product_dm: DataModelDocument) -> None:
    (imported,) = dt.findall("import")
    assert (imported.get("file"), imported.get("spec")) == (PRODUCT_DM.name, "urn:rdkcentral-org:dsm-tr181-2-19-1")
    assert [m.get("name") for m in imported.findall("model")] == ["Device:2.19"] == [product_dm.model_name]
    assert [m.get("ref") for m in dt.findall("model")] == ["Device:2.19"]


def test_dt_lists_the_supported_objects_parameters_commands_and_events(
    dt: etree._Element, product_dm: DataModelDocument
) -> None:
    listed = {o.get("ref"): o for o in dt.find("model").findall("object")}
    subtree = {p for p in product_dm.object_paths() if p.startswith(SM)}
    assert set(listed) == subtree | DEVICE_INFO_TABLES | {"Device.DeviceInfo.", "Device.Security.", SECURITY_TABLE}
    reduced = {"Device.DeviceInfo.": DEVICE_INFO_PARAMETERS, "Device.Security.": SECURITY_PARAMETERS}
    for path, element in listed.items():
        model = product_dm.object(path)
        params = {p.get("ref") for p in element.findall("parameter")}
        assert params == reduced.get(path, set(model.parameters)), path
        assert (element.get("minEntries"), element.get("maxEntries")) == (
            str(model.min_entries),
            "unbounded" if model.max_entries is None else str(model.max_entries),
        ), path
        others = {c.get("ref") for c in element if c.tag in ("command", "event")}
        assert others == SUPPORTED_COMMANDS_AND_EVENTS.get(path, set()), path


def test_dt_lists_every_argument_of_a_supported_command_or_event(
    dt: etree._Element, product_dm: DataModelDocument
) -> None:
    def names(container: etree._Element, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for child in container:
            found.add(prefix + child.get("ref"))
            if child.tag == "object":
                found |= names(child, prefix + child.get("ref"))
        return found

    checked = 0
    for element in dt.find("model").findall("object"):
        model = product_dm.object(element.get("ref"))
        for command in element.findall("command"):
            facts = model.commands[command.get("ref")]
            for tag, params, objects in (
                ("input", facts.inputs, facts.input_objects),
                ("output", facts.outputs, facts.output_objects),
            ):
                container = command.find(tag)
                listed = set() if container is None else names(container)
                left_out = NOT_ACTED_ON.get(facts.name, set()) if tag == "input" else set()
                expected = {n for n in set(params) | set(objects) if not any(n.startswith(x) for x in left_out)}
                assert listed == expected, f"{model.path}{facts.name} {tag}"
                checked += len(listed)
        for event in element.findall("event"):
            facts = model.events[event.get("ref")]
            assert names(event) == set(facts.arguments) | set(facts.objects), f"{model.path}{facts.name}"
            checked += len(facts.arguments) + len(facts.objects)
    assert checked > 60


def test_dt_states_the_network_mode_inputs_and_parameter(dt: etree._Element) -> None:
    """What the per-EU network modes add (lcm/networking.py), stated independently: both
    commands take 2.20's ShareParentNetwork and the vendor mode argument; the EU shows its mode.
    AccessInterfaces stays out: a non-empty one is refused (no AvailableAccessInterfaces)."""
    objects = {o.get("ref"): o for o in dt.find("model").findall("object")}
    for path, name in ((SM, "InstallDU()"), (f"{SM}DeploymentUnit.{{i}}.", "Update()")):
        (command,) = [c for c in objects[path].findall("command") if c.get("ref") == name]
        (network,) = [o for o in command.find("input").findall("object") if o.get("ref") == "NetworkConfig."]
        assert [p.get("ref") for p in network.findall("parameter")] == [
            "ShareParentNetwork",
            "X_RDKCENTRAL-COM_NetworkMode",
        ]
    eu_network = objects[f"{SM}ExecutionUnit.{{i}}.NetworkConfig."]
    assert [p.get("ref") for p in eu_network.findall("parameter")] == [
        "AccessInterfaceRefList",
        "PortMappingRefList",
        "X_RDKCENTRAL-COM_NetworkMode",
    ]


def test_dt_access_is_what_the_product_serves(dt: etree._Element, schema: Schema) -> None:
    # readWrite exactly where the served model is readWrite; writeOnceReadOnly (USP Alias) and
    # readOnly both become readOnly, as DT 1.15 has no writeOnceReadOnly
    for element in dt.find("model").findall("object"):
        obj = schema.objects[element.get("ref")]
        assert element.get("access") == ("createDelete" if obj.creatable else "readOnly"), obj.path
        for parameter in element.findall("parameter"):
            served = obj.parameters[parameter.get("ref")]
            expected = "readWrite" if served.access is Access.READ_WRITE else "readOnly"
            assert parameter.get("access") == expected, served.path


# Each mutation of the DT must be reported by dt_rules: (old text, new text, expected message part).
MUTATIONS = {
    "unknown parameter": ('<parameter ref="ActiveExecutionUnits" access="readOnly"/>',
                          '<parameter ref="NoSuchParameter" access="readOnly"/>', "does not exist"),
    "readWrite on a readOnly parameter": ('<parameter ref="ActiveExecutionUnits" access="readOnly"/>',
                                          '<parameter ref="ActiveExecutionUnits" access="readWrite"/>', "wider"),
    "createDelete on a fixed table": (
        'ref="Device.SoftwareModules.ExecEnv.{i}." access="readOnly"',
        'ref="Device.SoftwareModules.ExecEnv.{i}." access="createDelete"', "access createDelete is wider"),
    "maxEntries above the model's": (
        'ref="Device.SoftwareModules.ExecutionUnit.{i}.Extensions." access="readOnly" minEntries="1" maxEntries="1"',
        'ref="Device.SoftwareModules.ExecutionUnit.{i}.Extensions." access="readOnly" minEntries="1" maxEntries="2"',
        "maxEntries 2 is above"),
    "minEntries below the model's": (
        'ref="Device.SoftwareModules." access="readOnly" minEntries="1"',
        'ref="Device.SoftwareModules." access="readOnly" minEntries="0"', "minEntries 0 is below"),
    "unknown object": ('ref="Device.SoftwareModules.ExecutionUnit.{i}.Extensions."',
                       'ref="Device.SoftwareModules.ExecutionUnit.{i}.Gadgets."', "object does not exist"),
    "unknown command": ('<command ref="Uninstall()">', '<command ref="Explode()">', "command does not exist"),
    "unknown event": ('<event ref="Restarted!">', '<event ref="Exploded!">', "event does not exist"),
    "unknown argument": ('<parameter ref="Force"/>', '<parameter ref="Forced"/>', "argument Forced does not exist"),
    "argument object above its maxEntries": (
        '<object ref="AutoRestart." minEntries="1" maxEntries="1">',
        '<object ref="AutoRestart." minEntries="1" maxEntries="3">', "AutoRestart.: maxEntries 3"),
    "another base type": ('<parameter ref="ExecEnvLabel" access="readOnly"/>',
                          '<parameter ref="ExecEnvLabel" access="readOnly"><syntax><unsignedInt/></syntax>'
                          "</parameter>", "base type unsignedInt is not the model's string"),
    "list-ness changed": ('<parameter ref="EUID" access="readOnly"/>',
                          '<parameter ref="EUID" access="readOnly"><syntax><list/><string/></syntax></parameter>',
                          "list-ness"),
    "another named data type": ('<parameter ref="UUID" access="readOnly"/>',
                                '<parameter ref="UUID" access="readOnly"><syntax><dataType ref="URL"/></syntax>'
                                "</parameter>", "data type URL is not the model's 'UUID'"),
    "foreign enumeration value": (
        '<parameter ref="ExecutionFaultCode" access="readOnly"/>',
        '<parameter ref="ExecutionFaultCode" access="readOnly"><syntax><string><enumeration value="NoFault"/>'
        '<enumeration value="Exploded"/></string></syntax></parameter>', "['Exploded'] are not the model's"),
    "wider size": ('<parameter ref="EUID" access="readOnly"/>',
                   '<parameter ref="EUID" access="readOnly"><syntax><string><size maxLength="65"/></string>'
                   "</syntax></parameter>", "maxLength 65 widens the model's 64"),
    "wider range": ('<parameter ref="InitialRunLevel" access="readWrite"/>',
                    '<parameter ref="InitialRunLevel" access="readWrite"><syntax><unsignedInt>'
                    '<range minInclusive="0" maxInclusive="70000"/></unsignedInt></syntax></parameter>',
                    "range 0..70000 is not within"),
    "default where the model has one": (
        '<parameter ref="ShutdownDelay" access="readWrite"/>',
        '<parameter ref="ShutdownDelay" access="readWrite"><syntax><unsignedInt/><default type="object" value="5"/>'
        "</syntax></parameter>", "already has one ('10')"),
    "import spec mismatch": ('spec="urn:rdkcentral-org:dsm-tr181-2-19-1"', 'spec="urn:example:other"',
                             "spec urn:example:other is not the document's"),
    "model not imported": ('<model ref="Device:2.19">', '<model ref="Device:2.20">',
                           "model Device:2.20 is not imported"),
}  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dt")
    shutil.copy(PRODUCT_DM, folder / PRODUCT_DM.name)
    return folder


@pytest.mark.parametrize("name", MUTATIONS)
def test_dt_rules_report_each_kind_of_breach(name: str, scratch: Path) -> None:
    old, new, message = MUTATIONS[name]
    text = PRODUCT_DT.read_text()
    assert text.count(old) == 1, f"mutation {name!r} no longer applies"
    mutated = scratch / f"{name.replace(' ', '-')}.xml"
    mutated.write_text(text.replace(old, new))
    found = dt_rules.violations(mutated)
    assert len(found) == 1 and message in found[0], found
