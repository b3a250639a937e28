"""Regenerate ``dsm-tr181-2-19-1.xml`` from the Broadband Forum's TR-181 2.19.1 files.

The product serves ``Device.SoftwareModules.`` (and the DeviceInfo log/config-file tables
its references point at) exactly as TR-181 Issue 2 Amendment 19 Corrigendum 1 defines
them. This script restates those definitions, unchanged, in one BBF-format DM document:

* every object under ``Device.SoftwareModules.`` from the USP flavour, with its
  parameters, commands and events;
* the four CWMP-only parameters of the SoftwareModules profiles (``ExecEnv.{i}.Reset``,
  ``ExecEnv.{i}.RequestedRunLevel``, ``ExecutionUnit.{i}.RequestedState``,
  ``ExecutionUnit.{i}.SupportedDataModelList``) from the CWMP flavour, so that TR-069
  controllers reaching the product through the RDK-B stack find them;
* ``Device.DeviceInfo.VendorLogFile.{i}.`` and ``VendorConfigFile.{i}.`` (parameters only),
  which ``VendorLogList``/``VendorConfigList`` reference;
* ``Device.Security.Certificate.{i}.`` (and ``Device.Security.`` reduced to its
  ``CertificateNumberOfEntries``), which ``ExecEnv.{i}.Signers`` references;
* two vendor parameters, ``DeploymentUnit.{i}.X_RDKCENTRAL-COM_SignedBy`` and
  ``ExecutionUnit.{i}.NetworkConfig.X_RDKCENTRAL-COM_NetworkMode`` (TR-106 vendor prefix for
  the domain rdkcentral.com), defined here (:data:`VENDOR_PARAMETERS`), not by the Broadband
  Forum;
* two input arguments of ``NetworkConfig.`` of InstallDU() and Update() (:data:`NETWORK_INPUTS`):
  ``ShareParentNetwork`` as TR-181 Amendment 20 adds it, and the vendor
  ``X_RDKCENTRAL-COM_NetworkMode``;
* the data types, templates and bibliography entries those definitions use.

Usage: ``python datamodel/regenerate.py [--bbf ../shared/bbf]``.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

from lxml import etree

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dsm-tr181-2-19-1.xml"
SPEC = "urn:rdkcentral-org:dsm-tr181-2-19-1"

SUBTREE = "Device.SoftwareModules."
DEVICEINFO_TABLES = ("Device.DeviceInfo.VendorConfigFile.{i}.", "Device.DeviceInfo.VendorLogFile.{i}.")
DEVICEINFO_COUNTS = ("VendorConfigFileNumberOfEntries", "VendorLogFileNumberOfEntries")
SECURITY = "Device.Security."
SECURITY_TABLE = "Device.Security.Certificate.{i}."
SECURITY_COUNTS = ("CertificateNumberOfEntries",)
DU_ROW = "Device.SoftwareModules.DeploymentUnit.{i}."
VENDOR_PARAMETERS = {
    DU_ROW: """
      <parameter name="X_RDKCENTRAL-COM_SignedBy" access="readOnly">
        <description>
          Vendor extension of dsm-tr181. The Subject (RFC 4514 text) of the X.509 certificate
          whose detached CMS signature over this DU's archive was verified, against the
          {{param|#.ExecEnv.{i}.Signers}} of its execution environment, when the DU was last
          installed or updated. {{empty}} when that was done without a signature.
        </description>
        <syntax>
          <string>
            <size maxLength="256"/>
          </string>
        </syntax>
      </parameter>""",
}
EU_NETWORK = "Device.SoftwareModules.ExecutionUnit.{i}.NetworkConfig."
VENDOR_PARAMETERS[EU_NETWORK] = """
      <parameter name="X_RDKCENTRAL-COM_NetworkMode" access="readOnly">
        <description>
          Vendor extension of dsm-tr181. The network this {{object|#}} gets: Bridged (a network
          namespace of its own on its ExecEnv's bridge, with NAT and its port mappings), None (a
          network namespace with loopback only) or ShareParent (its ExecEnv's network, which is
          the host's). Chosen by the NetworkConfig.X_RDKCENTRAL-COM_NetworkMode or
          NetworkConfig.ShareParentNetwork input of InstallDU() or Update(), else its ExecEnv's
          default.
        </description>
        <syntax>
          <string>
            <enumeration value="Bridged"/>
            <enumeration value="None"/>
            <enumeration value="ShareParent"/>
          </string>
        </syntax>
      </parameter>"""
# Input arguments added to NetworkConfig. of InstallDU() and Update(): 2.20's ShareParentNetwork
# (restated from TR-181 Amendment 20, which this 2.19.1 document otherwise predates) and the
# vendor mode argument for what 2.20 has no input for.
NETWORK_INPUTS = """
            <parameter name="ShareParentNetwork" mandatory="false">
              <description>
                When true, the ExecutionUnit shares the network of its parent ExecEnv instead
                of having one of its own; {{param|AccessInterfaces}} and
                {{object|PortMapping}} are then ignored. (TR-181 Issue 2 Amendment 20.)
              </description>
              <syntax>
                <boolean/>
              </syntax>
            </parameter>
            <parameter name="X_RDKCENTRAL-COM_NetworkMode" mandatory="false">
              <description>
                Vendor extension of dsm-tr181. The ExecutionUnit's network: Bridged, None or
                ShareParent (as {{param|ShareParentNetwork}} true). Absent: as
                {{param|ShareParentNetwork}} says, else the ExecEnv's default (Update(): the
                ExecutionUnit's mode so far).
              </description>
              <syntax>
                <string>
                  <enumeration value="Bridged"/>
                  <enumeration value="None"/>
                  <enumeration value="ShareParent"/>
                </string>
              </syntax>
            </parameter>"""
NETWORK_INPUT_COMMANDS = {"Device.SoftwareModules.": "InstallDU()", DU_ROW: "Update()"}
CWMP_ONLY = {
    "Device.SoftwareModules.ExecEnv.{i}.": ("Reset", "RequestedRunLevel"),
    "Device.SoftwareModules.ExecutionUnit.{i}.": ("RequestedState", "SupportedDataModelList"),
}


def _objects(model: etree._Element) -> dict[str, etree._Element]:
    return {obj.get("name"): obj for obj in model.findall("object")}


def _strip_commands(obj: etree._Element) -> etree._Element:
    obj = copy.deepcopy(obj)
    for child in obj.findall("command") + obj.findall("event"):
        obj.remove(child)
    return obj


def _reduced(obj: etree._Element, counts: tuple[str, ...]) -> etree._Element:
    """An object reduced to the NumberOfEntries of the tables served below it."""
    obj = copy.deepcopy(obj)
    for child in list(obj):
        if child.tag in ("parameter", "command", "event") and child.get("name") not in counts:
            obj.remove(child)
    return obj


def _add_vendor_parameters(obj: etree._Element, text: str) -> None:
    last = obj.findall("parameter")[-1]
    for parameter in reversed(etree.fromstring(f"<x>{text}</x>").findall("parameter")):
        parameter.tail = last.tail
        last.addnext(parameter)


def _root_object(objects: dict[str, etree._Element]) -> etree._Element:
    root = copy.deepcopy(objects["Device."])
    for child in list(root):
        if child.tag != "description":
            root.remove(child)
    return root


def _insert_cwmp_only(obj: etree._Element, cwmp_obj: etree._Element, names: tuple[str, ...]) -> None:
    params = {p.get("name"): p for p in cwmp_obj.findall("parameter")}
    last_param = obj.findall("parameter")[-1]
    for name in reversed(names):
        last_param.addnext(copy.deepcopy(params[name]))


def _referenced(tree: etree._Element, pattern: str) -> set[str]:
    text = etree.tostring(tree, encoding="unicode")
    return set(re.findall(pattern, text))


def _data_types(usp_root: etree._Element, model: etree._Element) -> list[etree._Element]:
    defined = {dt.get("name"): dt for dt in usp_root.findall("dataType")}
    wanted = {el.get("ref") for el in model.iter("dataType") if el.get("ref")}
    closure: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in closure:
            continue
        closure.add(name)
        base = defined[name].get("base")
        if base:
            wanted.add(base)
    # keep the BBF file's order (bases before derived types)
    return [copy.deepcopy(dt) for name, dt in defined.items() if name in closure]


def build(bbf: Path) -> etree._ElementTree:
    parser = etree.XMLParser(remove_blank_text=False)
    usp = etree.parse(str(bbf / "tr-181-2-19-1-usp-full.xml"), parser)
    cwmp = etree.parse(str(bbf / "tr-181-2-19-1-cwmp-full.xml"), parser)
    usp_root = usp.getroot()
    usp_objects = _objects(usp_root.find("model"))
    cwmp_objects = _objects(cwmp.getroot().find("model"))

    model = etree.Element("model", name="Device:2.19")
    model.text = "\n\n    "
    members = [_root_object(usp_objects), _reduced(usp_objects["Device.DeviceInfo."], DEVICEINFO_COUNTS)]
    members += [_strip_commands(usp_objects[name]) for name in DEVICEINFO_TABLES]
    members += [_reduced(usp_objects[SECURITY], SECURITY_COUNTS), _strip_commands(usp_objects[SECURITY_TABLE])]
    for name, obj in usp_objects.items():
        if name.startswith(SUBTREE):
            obj = copy.deepcopy(obj)
            if name in CWMP_ONLY:
                _insert_cwmp_only(obj, cwmp_objects[name], CWMP_ONLY[name])
            if name in VENDOR_PARAMETERS:
                _add_vendor_parameters(obj, VENDOR_PARAMETERS[name])
            if name in NETWORK_INPUT_COMMANDS:
                command = next(c for c in obj.findall("command") if c.get("name") == NETWORK_INPUT_COMMANDS[name])
                network = next(o for o in command.find("input").findall("object") if o.get("name") == "NetworkConfig.")
                _add_vendor_parameters(network, NETWORK_INPUTS)
            members.append(obj)
    for obj in members:
        obj.tail = "\n\n    "
        model.append(obj)
    members[-1].tail = "\n  "

    document = etree.Element(usp_root.tag, nsmap=usp_root.nsmap)
    for key, value in usp_root.attrib.items():
        document.set(key, value)
    document.set("spec", SPEC)
    document.set("file", OUTPUT.name)
    document.text = "\n\n  "

    children: list[etree._Element] = _data_types(usp_root, model)
    templates = _referenced(model, r"\{\{template\|([^}|]+)")
    children += [copy.deepcopy(t) for t in usp_root.findall("template") if t.get("id") in templates]
    bibrefs = _referenced(model, r"\{\{bibref\|([^}|]+)")
    for definition in children:
        bibrefs |= _referenced(definition, r"\{\{bibref\|([^}|]+)")
    bibliography = etree.Element("bibliography")
    bibliography.text = "\n    "
    for ref in usp_root.find("bibliography").findall("reference"):
        if ref.get("id") in bibrefs:
            bibliography.append(copy.deepcopy(ref))
    children.insert(0, bibliography)
    children.append(model)
    for child in children:
        child.tail = "\n\n  "
        document.append(child)
    children[-1].tail = "\n"

    license_comment = usp_root.getprevious()
    header = etree.Comment(
        "\n  dsm-tr181 supported data model: Device.SoftwareModules. restated from the\n"
        "  Broadband Forum's TR-181 Issue 2 Amendment 19 Corrigendum 1 (tr-181-2-19-1-usp-full.xml,\n"
        "  plus four CWMP-only parameters from tr-181-2-19-1-cwmp-full.xml, Device.Security.Certificate,\n"
        "  vendor parameters named X_RDKCENTRAL-COM_ and 2.20's NetworkConfig.ShareParentNetwork\n"
        "  input of InstallDU()/Update(), see datamodel/regenerate.py). Generated by\n"
        "  datamodel/regenerate.py; do not edit by hand. The definitions are the Broadband\n"
        "  Forum's, under the licence below (also in datamodel/LICENSE-BBF).\n"
    )
    out = etree.ElementTree(document)
    document.addprevious(header)
    document.addprevious(copy.deepcopy(license_comment))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bbf", type=Path, default=HERE.parent.parent / "shared" / "bbf")
    opts = parser.parse_args()
    tree = build(opts.bbf)
    tree.write(str(OUTPUT), xml_declaration=True, encoding="UTF-8")
    with OUTPUT.open("ab") as fh:
        fh.write(b"\n")
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
