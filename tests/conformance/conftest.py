"""Session fixtures of the conformance suite: the vendored BBF files, compiled schemas, the served model."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from dsm_tr181.schema import Schema, load_schema
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.supported import SupportedObject
from tests.conformance.bbf_reference import DataModelDocument, parse_xml, read_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENDORED = HERE / "bbf"
SHARED = REPO.parent / "shared" / "bbf"  # present on developer machines, maybe not in CI
DATAMODEL = REPO / "datamodel"
PRODUCT_DM = DATAMODEL / "dsm-tr181-2-19-1.xml"
PRODUCT_DT = DATAMODEL / "dsm-tr181-dt.xml"
USP_FULL = VENDORED / "tr-181-2-19-1-usp-full.xml.xz"
CWMP_FULL = VENDORED / "tr-181-2-19-1-cwmp-full.xml.xz"
DM_NAMESPACE = "urn:broadband-forum-org:cwmp:datamodel-1-15"
DT_NAMESPACE = "urn:broadband-forum-org:cwmp:devicetype-1-15"


def catalog_mapper() -> dict[str, str]:
    """The rewriteSystem rules of the vendored catalog.xml: schema URL prefix -> local folder."""
    catalog = etree.parse(str(VENDORED / "catalog.xml")).getroot()
    rules = catalog.findall("{urn:oasis:names:tc:entity:xmlns:xml:catalog}rewriteSystem")
    return {r.get("systemIdStartString"): str((VENDORED / r.get("rewritePrefix")).resolve()) + "/" for r in rules}


def _uri_mapper(uri: str) -> str:
    for prefix, folder in catalog_mapper().items():
        if uri.startswith(prefix):
            return folder + uri[len(prefix) :]
    return uri


def compile_schema(name: str) -> xmlschema.XMLSchema11:
    # lxml (libxml2) implements XSD 1.0 only and cannot compile the BBF schemas, which use
    # XSD 1.1 (assertions, vc:minVersion="1.1"); xmlschema implements XSD 1.1.
    return xmlschema.XMLSchema11(str(VENDORED / name), uri_mapper=_uri_mapper)


@pytest.fixture(scope="session")
def schemas() -> dict[str, xmlschema.XMLSchema11]:
    """The DM and DT schemas by target namespace, compiled once (about a second each)."""
    return {
        DM_NAMESPACE: compile_schema("cwmp-datamodel-1-15.xsd"),
        DT_NAMESPACE: compile_schema("cwmp-devicetype-1-15.xsd"),
    }


@pytest.fixture(scope="session")
def full_xml() -> dict[str, bytes]:
    """The two vendored BBF full XML files, decompressed, by their uncompressed name."""
    return {path.name.removesuffix(".xz"): read_bytes(path) for path in (USP_FULL, CWMP_FULL)}


@pytest.fixture(scope="session")
def usp(full_xml: dict[str, bytes]) -> DataModelDocument:
    return DataModelDocument(parse_xml(full_xml[USP_FULL.stem]))


@pytest.fixture(scope="session")
def cwmp(full_xml: dict[str, bytes]) -> DataModelDocument:
    return DataModelDocument(parse_xml(full_xml[CWMP_FULL.stem]))


@pytest.fixture(scope="session")
def product_dm() -> DataModelDocument:
    return DataModelDocument.load(PRODUCT_DM)


@pytest.fixture(scope="session")
def schema() -> Schema:
    return load_schema()


@pytest.fixture(scope="session")
def supported(schema: Schema) -> list[SupportedObject]:
    """The product's own USP GetSupportedDM answer for the whole model."""
    return DataModel(schema).get_supported_dm(["Device."])["Device."]
