"""Fixtures shared by the rbus test modules: ``tools`` (librbus and rtrouted) and ``cli_tools``
(those and rbuscli), or a visible skip saying what is missing; ``dobby``: the Dobby stand-in
and the real DobbyDaemon (see dobby_daemons.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dobby_daemons import KINDS, Dobby
from tests.support.dbusdaemon import private_bus
from tests.support.rtrouted import RbusTools, find_tools


@pytest.fixture(scope="module")
def tools() -> RbusTools:
    found = find_tools()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def cli_tools(tools: RbusTools) -> RbusTools:
    if tools.rbuscli is None:
        pytest.skip("no rbuscli: set DSM_RBUSCLI or put rbuscli beside rtrouted")
    return tools


@pytest.fixture(params=KINDS)
def dobby(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dobby]:
    with private_bus() as bus:
        yield Dobby(request.param, bus, tmp_path / f"dobby-{request.param}")
