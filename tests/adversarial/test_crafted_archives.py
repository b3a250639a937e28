"""Item 1: every crafted archive ends its install with 7035 Corrupt Data, its DUStateChange!
and nothing left behind — the row, the journal record and the bundle directory all go,
so the same URL installs (and fails) again instead of 7226, and nothing needs a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.adversarial.archives import CRAFTED, crafted, write
from tests.integration.lcm_helpers import DU, install, rows, top_entries
from tests.support.daemon import DsmDaemon

pytestmark = pytest.mark.integration

CORRUPT = str(FaultCode.CORRUPT_DATA.usp)  # events carry text values


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_archive_fails_with_corrupt_data_its_event_and_no_leftovers(
    dsm: DsmDaemon, work: Path, name: str
) -> None:
    url = f"file://{write(work, name, crafted(name))}"
    for attempt in (1, 2):  # the second attempt proves nothing of the first one stayed (no 7226)
        events = dsm.events("Device.SoftwareModules.")
        outcome = install(dsm, url)
        assert outcome.fault is not None and outcome.fault["code"] == FaultCode.CORRUPT_DATA.usp, (attempt, outcome)
        event = events.du_state_change("Install", timeout=20)
        assert (event["CurrentState"], event["Fault.FaultCode"]) == ("Failed", CORRUPT), event
        assert rows(dsm, DU) == []
        assert top_entries(dsm.state / "bundles") == []
