from pathlib import Path

import pytest

from dsm_tr181.schema.loader import load_documents
from dsm_tr181.schema.model import Schema
from dsm_tr181.tree.datamodel import DataModel

TEST_MODEL = Path(__file__).parent / "data" / "test-model.xml"


@pytest.fixture(scope="session")
def test_schema() -> Schema:
    return load_documents([TEST_MODEL])


@pytest.fixture
def dm(test_schema: Schema) -> DataModel:
    return DataModel(test_schema)
