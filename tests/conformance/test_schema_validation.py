"""The product's data-model documents are valid BBF DM / DT instances."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from dsm_tr181.schema import load_schema
from tests.conformance.bbf_reference import DataModelDocument
from tests.conformance.conftest import DATAMODEL, DM_NAMESPACE, DT_NAMESPACE

pytestmark = pytest.mark.conformance
DOCUMENTS = sorted(DATAMODEL.glob("*.xml"))


def _namespace(path: Path) -> str:
    return etree.QName(etree.parse(str(path)).getroot()).namespace


def test_datamodel_folder_has_a_dm_and_a_dt_document() -> None:
    assert {_namespace(p) for p in DOCUMENTS} == {DM_NAMESPACE, DT_NAMESPACE}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_document_is_well_formed_for_lxml(path: Path) -> None:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    assert etree.parse(str(path), parser).getroot() is not None


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_document_validates_against_its_bbf_schema(path: Path, schemas: dict[str, xmlschema.XMLSchema11]) -> None:
    errors = [str(e) for e in schemas[_namespace(path)].iter_errors(str(path))]
    assert not errors, f"{path.name}: {len(errors)} schema errors:\n" + "\n".join(errors[:5])


def test_schema_validation_rejects_an_invalid_document(
    schemas: dict[str, xmlschema.XMLSchema11], tmp_path: Path
) -> None:
    # proves that the validation above is real: a DT parameter with no access is refused
    text = (DATAMODEL / "dsm-tr181-dt.xml").read_text()
    valid = '<parameter ref="ExecEnvNumberOfEntries" access="readOnly"/>'
    assert valid in text
    broken = tmp_path / "broken-dt.xml"
    broken.write_text(text.replace(valid, '<parameter ref="ExecEnvNumberOfEntries"/>'))
    assert not schemas[DT_NAMESPACE].is_valid(str(broken))


def test_load_schema_reads_the_dm_document_and_skips_the_dt(product_dm: DataModelDocument) -> None:
    schema = load_schema(DATAMODEL)
    assert schema.spec == product_dm.spec
    assert list(schema.objects) == product_dm.object_paths()
