"""Regenerate ``dsm-tr181-dt.xml``, the TR-106 device-type (DT) document of dsm-tr181.

The DT states what the product supports of its data model (``dsm-tr181-2-19-1.xml``,
which it imports): the objects, parameters, commands and events listed in this script,
each with the model's own entry counts and access. DT Schema 1.15 has no
``writeOnceReadOnly``, so the USP ``Alias`` parameters are stated ``readOnly``. Command and
event arguments are listed in full: every argument of a supported command or event is
supported but those in NOT_ACTED_ON, which the product refuses or ignores and so leaves out.
No syntax is restated, so the model's types and defaults apply unchanged.

Usage: ``python datamodel/regenerate_dt.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from lxml import etree

HERE = Path(__file__).resolve().parent
DM_FILE = HERE / "dsm-tr181-2-19-1.xml"
OUTPUT = HERE / "dsm-tr181-dt.xml"
DEVICE_TYPE = "urn:rdkcentral-org:dsm-tr181"
DT_NS = "urn:broadband-forum-org:cwmp:devicetype-1-15"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{DT_NS} https://www.broadband-forum.org/cwmp/cwmp-devicetype-1-15.xsd"
GONE = ("obsoleted", "deleted")

# Supported objects, in the order the DT lists them. None: every parameter of the object.
PARAMETERS: dict[str, tuple[str, ...] | None] = {
    "Device.DeviceInfo.": ("VendorConfigFileNumberOfEntries", "VendorLogFileNumberOfEntries"),
    "Device.DeviceInfo.VendorConfigFile.{i}.": None,
    "Device.DeviceInfo.VendorLogFile.{i}.": None,
    "Device.Security.": ("CertificateNumberOfEntries",),
    "Device.Security.Certificate.{i}.": None,
    "Device.SoftwareModules.": None,
    "Device.SoftwareModules.ExecEnvClass.{i}.": None,
    "Device.SoftwareModules.ExecEnvClass.{i}.Capability.{i}.": None,
    "Device.SoftwareModules.ExecEnv.{i}.": None,
    "Device.SoftwareModules.ExecEnv.{i}.ApplicationData.{i}.": None,
    "Device.SoftwareModules.DeploymentUnit.{i}.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.AutoRestart.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.NetworkConfig.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.HostObject.{i}.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.EnvVariable.{i}.": None,
    "Device.SoftwareModules.ExecutionUnit.{i}.Extensions.": None,
}
# Supported commands and events; the model's others (AddExecEnv(), ModifyConstraints(),
# ModifyAvailableRoles(), ModifyAvailableAccessInterfaces(), the two Remove()) are not.
COMMANDS: dict[str, tuple[str, ...]] = {
    "Device.SoftwareModules.": ("InstallDU()",),
    "Device.SoftwareModules.ExecEnv.{i}.": ("SetRunLevel()", "Reset()", "Restart()"),
    "Device.SoftwareModules.DeploymentUnit.{i}.": ("Update()", "Uninstall()"),
    "Device.SoftwareModules.ExecutionUnit.{i}.": ("SetRequestedState()", "Restart()"),
}
# Inputs of supported commands the product does not act on: refused with 7225 (a non-empty
# NetworkConfig.AccessInterfaces: no ExecEnv has AvailableAccessInterfaces) or without effect
# (RegisterTrustPaths; Update()'s ModuleVersion).
_NOT_YET = ("RegisterTrustPaths", "NetworkConfig.AccessInterfaces")
NOT_ACTED_ON: dict[str, tuple[str, ...]] = {
    "Device.SoftwareModules.InstallDU()": _NOT_YET,
    "Device.SoftwareModules.DeploymentUnit.{i}.Update()": (*_NOT_YET, "ModuleVersion"),
}
EVENTS: dict[str, tuple[str, ...]] = {
    "Device.SoftwareModules.": ("DUStateChange!",),
    "Device.SoftwareModules.ExecEnv.{i}.": ("Restarted!",),
}


def _current(element: etree._Element, tag: str) -> list[etree._Element]:
    return [child for child in element.findall(tag) if child.get("status") not in GONE]


def _named(element: etree._Element, tag: str, name: str) -> etree._Element:
    for child in _current(element, tag):
        if child.get("name") == name:
            return child
    raise KeyError(f"{element.get('name')}: no {tag} {name} in {DM_FILE.name}")


def _entries(dm_element: etree._Element, dt_element: etree._Element) -> None:
    dt_element.set("minEntries", dm_element.get("minEntries", "1"))
    dt_element.set("maxEntries", dm_element.get("maxEntries", "1"))


def _arguments(
    dm_container: etree._Element, dt_container: etree._Element, left_out: tuple[str, ...] = (), prefix: str = ""
) -> None:
    """Every current argument (parameters and argument objects, nested) of a command or event
    but those ``left_out`` (by their path below the command)."""
    for child in dm_container:
        path = prefix + str(child.get("name"))
        if child.tag not in ("parameter", "object") or child.get("status") in GONE or path in left_out:
            continue
        dt_child = etree.SubElement(dt_container, child.tag, ref=child.get("name"))
        if child.tag == "object":
            _entries(child, dt_child)
            _arguments(child, dt_child, left_out, path)


def _parameter_access(dm_parameter: etree._Element) -> str:
    return "readWrite" if dm_parameter.get("access") == "readWrite" else "readOnly"


def _object(dm_object: etree._Element, path: str, model: etree._Element) -> None:
    access = "createDelete" if dm_object.get("access") == "readWrite" else "readOnly"
    dt_object = etree.SubElement(model, "object", ref=path, access=access)
    _entries(dm_object, dt_object)
    names = PARAMETERS[path]
    parameters = _current(dm_object, "parameter")
    if names is not None:
        parameters = [_named(dm_object, "parameter", name) for name in names]
    for parameter in parameters:
        etree.SubElement(dt_object, "parameter", ref=parameter.get("name"), access=_parameter_access(parameter))
    for name in COMMANDS.get(path, ()):
        command = _named(dm_object, "command", name)
        dt_command = etree.SubElement(dt_object, "command", ref=name)
        for tag in ("input", "output"):
            container = command.find(tag)
            if container is not None:
                _arguments(container, etree.SubElement(dt_command, tag), NOT_ACTED_ON.get(path + name, ()))
    for name in EVENTS.get(path, ()):
        _arguments(_named(dm_object, "event", name), etree.SubElement(dt_object, "event", ref=name))


def build(dm_file: Path = DM_FILE) -> bytes:
    """The DT document, serialized; its uuid is a version-5 UUID of the rest of its text."""
    dm_root = etree.parse(str(dm_file)).getroot()
    dm_model = dm_root.find("model")
    dm_objects = {obj.get("name"): obj for obj in _current(dm_model, "object")}

    document = etree.Element(f"{{{DT_NS}}}document", nsmap={"dt": DT_NS, "xsi": XSI_NS})
    document.set(f"{{{XSI_NS}}}schemaLocation", SCHEMA_LOCATION)
    document.set("deviceType", DEVICE_TYPE)
    document.set("uuid", str(uuid.UUID(int=0)))
    etree.SubElement(document, "annotation").text = (
        "Device.SoftwareModules. (and the DeviceInfo vendor log/config file tables and the "
        "Security.Certificate table it references) "
        "as supported by dsm-tr181. Generated by datamodel/regenerate_dt.py; do not edit by hand."
    )
    imported = etree.SubElement(document, "import", file=dm_file.name, spec=dm_root.get("spec"))
    etree.SubElement(imported, "model", name=dm_model.get("name"))
    model = etree.SubElement(document, "model", ref=dm_model.get("name"))
    for path in PARAMETERS:
        _object(dm_objects[path], path, model)
    etree.indent(document, space="  ")

    def text() -> bytes:
        return etree.tostring(document, xml_declaration=True, encoding="UTF-8") + b"\n"

    document.set("uuid", str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, DEVICE_TYPE), text().decode())))
    return text()


def main() -> int:
    OUTPUT.write_bytes(build())
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
