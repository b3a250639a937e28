"""The fleet client's vendor extension (datamodel/vendor/): a valid BBF DM document, named per
TR-106 vendor rules, served only when the fleet client is on, and adding exactly its own
object to the BBF model (which the rest of this suite checks unchanged)."""

from __future__ import annotations

import re

import pytest
import xmlschema
from lxml import etree

from dsm_tr181 import fleet
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel
from tests.conformance.conftest import DATAMODEL, DM_NAMESPACE

pytestmark = pytest.mark.conformance
DOCUMENT = fleet.extensions(DATAMODEL)[0]
# TR-106 3.3: a vendor-specific name starts with X_<VENDOR>_ (here the RDK OUI-less vendor id "RDK").
VENDOR_NAME = re.compile(r"^X_RDK_[A-Za-z][A-Za-z0-9_]*$")
FLEET = "Device.SoftwareModules.X_RDK_Fleet."


def test_the_extension_validates_against_the_dm_schema(schemas: dict[str, xmlschema.XMLSchema11]) -> None:
    errors = [str(e) for e in schemas[DM_NAMESPACE].iter_errors(str(DOCUMENT))]
    assert not errors, "\n".join(errors[:5])


def test_every_new_object_follows_the_vendor_naming_rule() -> None:
    objects = etree.parse(str(DOCUMENT)).getroot().iter("object")
    for obj in objects:
        path = obj.get("name")
        assert path.startswith("Device.SoftwareModules.")
        new = path.removeprefix("Device.SoftwareModules.").rstrip(".").split(".")[0]
        assert VENDOR_NAME.match(new), f"{path}: a vendor object must be named X_RDK_..."


def test_served_only_with_the_extension_and_adds_only_its_object() -> None:
    plain, extended = load_schema(DATAMODEL), load_schema(DATAMODEL, extensions=[DOCUMENT])
    assert FLEET not in plain.objects
    assert set(extended.objects) - set(plain.objects) == {FLEET}
    for path, obj in plain.objects.items():
        assert list(extended.objects[path].parameters) == list(obj.parameters)
    served = DataModel(extended).get_supported_dm([FLEET])[FLEET][0]
    access = {p.name: p.access for p in served.params}
    writable, readable = "PARAM_READ_WRITE", "PARAM_READ_ONLY"
    assert access == {"Enable": writable, "URL": writable, "Labels": writable,
                      "LastSync": readable, "Status": readable, "LastError": readable}  # fmt: skip
