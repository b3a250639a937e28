"""Parts of the device-side client that need no repository: backoff, labels, the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm_tr181 import fleet
from dsm_tr181.fleet.agent import FLEET, FleetAgent, _image_name
from dsm_tr181.fleet.ownership import Owned, Ownership, du_uuid
from dsm_tr181.fleet.settings import FleetSettings
from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel

pytestmark = pytest.mark.unit


@pytest.fixture
def agent(tmp_path: Path) -> FleetAgent:
    token = tmp_path / "token"
    token.write_text("dsmf_secret\n")
    settings = FleetSettings(enable=True, url="https://127.0.0.1:1", token_file=token, labels="fleet=eu",
                             firmware_key="fw-7", jitter=0.0, retry_min=0.5, retry_max=2.0)  # fmt: skip
    dm = DataModel(load_schema(extensions=fleet.extensions(None)))
    dm.add_row("Device.SoftwareModules.ExecEnv.", {"Name": "default"})
    return FleetAgent(settings, dm, tmp_path)


def test_backoff_doubles_up_to_the_maximum_and_shows_the_error(agent: FleetAgent) -> None:
    assert [agent._backoff("repository: down") for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    values = agent.dm.get_values([FLEET])
    assert values[FLEET + "Status"] == "Error" and values[FLEET + "LastError"] == "repository: down"


def test_labels_configured_and_derived(agent: FleetAgent) -> None:
    labels = agent.device_labels()
    assert labels["fleet"] == "eu" and labels["firmware"] == "fw-7" and labels["execenv"] == "default"
    assert labels["arch"]
    assert "dsmf_secret" not in repr(agent.dm.get_values([FLEET]))  # the token is nowhere in the tree


def test_firmware_key_from_version_txt(tmp_path: Path) -> None:
    version = tmp_path / "version.txt"
    version.write_text("imagename:TG4482PC2_7.2p3s1_PROD_sey\nBRANCH=stable2\n")
    assert _image_name(version) == "TG4482PC2_7.2p3s1_PROD_sey"
    assert _image_name(tmp_path / "absent") == ""


def test_journal_survives_reopening(tmp_path: Path) -> None:
    journal = Ownership(tmp_path / "fleet.json")
    journal.put(Owned("web", du_uuid("web"), "web-1", "0" * 64, "https://r/v1/blobs/0", "installing"))
    journal.set_overrides({"Labels": "fleet=us"})
    again = Ownership(tmp_path / "fleet.json")
    assert again.entries["web"].phase == "installing" and again.overrides == {"Labels": "fleet=us"}
    assert du_uuid("web") == du_uuid("web") != du_uuid("db")
    again.drop("web")
    assert Ownership(tmp_path / "fleet.json").entries == {}
