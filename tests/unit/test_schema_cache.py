"""The daemon's parsed-schema cache: reused while the documents are unchanged, so a
restart needs neither XML parsing nor lxml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsm_tr181.schema import load_schema
from dsm_tr181.schema.documents import default_datamodel_dir

pytestmark = pytest.mark.unit


def test_cache_round_trip_and_invalidation(tmp_path: Path) -> None:
    docs = tmp_path / "datamodel"
    shutil.copytree(default_datamodel_dir(), docs, ignore=shutil.ignore_patterns("*.py"))
    fresh = load_schema(docs, cache_dir=tmp_path)
    assert (tmp_path / "schema.pickle").stat().st_mode & 0o077 == 0
    cached = load_schema(docs, cache_dir=tmp_path)
    assert cached.counts() == fresh.counts() and cached.spec == fresh.spec
    dt = next(p for p in docs.glob("*.xml") if "-dt" in p.name)
    dt.write_text(dt.read_text().replace('<command ref="Reset()"/>', ""))
    changed = load_schema(docs, cache_dir=tmp_path)
    assert changed.counts()["commands"] == fresh.counts()["commands"] - 1


def test_a_cached_load_does_not_import_lxml(tmp_path: Path) -> None:
    load_schema(cache_dir=tmp_path)
    probe = (
        "import sys; from pathlib import Path; from dsm_tr181.schema import load_schema; "
        f"s = load_schema(cache_dir=Path({str(tmp_path)!r})); "
        "print(s.counts()['parameters'], 'lxml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["148", "False"]


def test_a_corrupt_cache_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "schema.pickle").write_bytes(b"not a pickle")
    assert load_schema(cache_dir=tmp_path).counts()["parameters"] == 148
    assert load_schema(cache_dir=tmp_path).counts()["parameters"] == 148
