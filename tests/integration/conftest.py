"""Fixtures shared by the rbus test modules: ``tools`` (librbus and rtrouted) and ``cli_tools``
(those and rbuscli), or a visible skip saying what is missing."""

from __future__ import annotations

import pytest

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
