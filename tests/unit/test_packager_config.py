"""TarPackagerConfig: defaults, reading a configuration section, refusing bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm_tr181 import adapters
from dsm_tr181.packagers.tar import TarPackager, TarPackagerConfig

pytestmark = pytest.mark.unit


def test_defaults_are_safe() -> None:
    config = TarPackagerConfig()
    assert config.verify_tls and config.sibling_digest and not config.allow_special_files
    assert config.ca_file is None and config.download_dir is None
    assert config.fetch_options().http.verify_tls
    assert config.extract_limits().max_entries == config.max_entries


def test_from_config_converts_paths_and_numbers() -> None:
    config = TarPackagerConfig.from_config(
        {"ca_file": "/etc/ca.pem", "read_timeout": 5, "max_entries": 10, "verify_tls": False, "download_dir": None}
    )
    assert config.ca_file == Path("/etc/ca.pem")
    assert config.read_timeout == 5.0 and isinstance(config.read_timeout, float)
    assert (config.max_entries, config.verify_tls, config.download_dir) == (10, False, None)


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"max_entriez": 1}, "packager.tar.max_entriez: unknown key"),
        ({"max_entries": "10"}, "packager.tar.max_entries: must be an integer"),
        ({"max_entries": True}, "packager.tar.max_entries: must be an integer"),
        ({"verify_tls": 1}, "packager.tar.verify_tls: must be true or false"),
        ({"connect_timeout": "fast"}, "packager.tar.connect_timeout: must be a number"),
        ({"ca_file": ""}, "packager.tar.ca_file: must be a path"),
        ({"max_archive_bytes": 0}, "packager.tar.max_archive_bytes: must be positive"),
        ({"max_redirects": -1}, "packager.tar.max_redirects: must not be negative"),
    ],
)
def test_from_config_rejects_bad_sections(section: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        TarPackagerConfig.from_config(section)


def test_registry_loads_the_tar_packager() -> None:
    cls = adapters.load("packager", "tar")
    assert cls is TarPackager
    packager = cls.from_config({"max_entries": 7})
    assert packager.config.max_entries == 7
    assert "max_entries=7" in repr(packager)
