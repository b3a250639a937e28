"""The vendored BBF files are the published ones, and the copy in shared/bbf when there is one."""

from __future__ import annotations

import hashlib

import pytest

from tests.conformance.bbf_reference import read_bytes
from tests.conformance.conftest import DATAMODEL, SHARED, VENDORED

pytestmark = pytest.mark.conformance
OURS = {"README.md", "SHA256SUMS"}  # written by this project, not copied


def _vendored() -> list[str]:
    return sorted(p.name for p in VENDORED.iterdir() if p.is_file() and p.name not in OURS)


def test_full_xml_decompresses_to_the_recorded_sha256(full_xml: dict[str, bytes]) -> None:
    recorded = dict(reversed(line.split()) for line in (VENDORED / "SHA256SUMS").read_text().splitlines() if line)
    assert set(recorded) == set(full_xml)
    for name, data in full_xml.items():
        assert hashlib.sha256(data).hexdigest() == recorded[name], f"{name}.xz does not decompress to the original"


def test_readme_describes_every_vendored_file() -> None:
    readme = (VENDORED / "README.md").read_text()
    missing = [name for name in [*_vendored(), "SHA256SUMS"] if f"`{name}`" not in readme]
    assert not missing, f"README.md does not describe {missing}"


def test_bbf_license_is_the_one_the_product_ships() -> None:
    assert (VENDORED / "LICENSE-BBF").read_bytes() == (DATAMODEL / "LICENSE-BBF").read_bytes()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not present (clean clone)")
@pytest.mark.parametrize("name", _vendored())
def test_vendored_copy_equals_shared(name: str) -> None:
    original = SHARED / name.removesuffix(".xz")
    assert original.is_file(), f"{original} is gone from shared/bbf"
    assert read_bytes(VENDORED / name) == original.read_bytes(), f"{name} differs from {original}: refresh it"
