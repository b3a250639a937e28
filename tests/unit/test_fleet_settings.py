"""The daemon's [fleet] section: documented with its defaults, checked, off by default."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from dsm_tr181 import fleet
from dsm_tr181.config import ConfigError, load_config
from dsm_tr181.fleet.settings import FleetSettings

pytestmark = pytest.mark.unit
DSM_TOML = Path(__file__).resolve().parents[2] / "integration" / "dsm.toml"


def test_dsm_toml_lists_every_key_with_its_default() -> None:
    text = DSM_TOML.read_text()
    section = tomllib.loads(text)["fleet"]
    commented = {f.name for f in dataclasses.fields(FleetSettings) if f"# {f.name} = " in text}
    assert set(section) | commented == {f.name for f in dataclasses.fields(FleetSettings)}
    assert fleet.settings(section) == FleetSettings()
    assert load_config({"config": str(DSM_TOML)}, env={}).fleet == section


def test_off_by_default_and_checked() -> None:
    assert load_config({}, env={"DSM_CONFIG_FILE": ""}).fleet == {}
    assert fleet.settings({}).enable is False
    for bad, message in (
        ({"enable": True, "token_file": "/t"}, "url"),
        ({"enable": True, "url": "https://x"}, "token_file"),
        ({"labels": "novalue"}, "labels"),
        ({"jitter": 1.5}, "jitter"),
        ({"interval": "60"}, "interval"),
        ({"polling": 3}, "unknown"),
    ):
        with pytest.raises(ConfigError, match=message):
            fleet.settings(bad)
