"""Fixtures of the fleet tests: the test CA and a running HTTPS repository server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleetserver import FleetServer
from tests.support.httpserver import TlsFiles, make_tls_files


@pytest.fixture(scope="session")
def fleet_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls_files(tmp_path_factory.mktemp("fleet-tls"))
    except FileNotFoundError:
        pytest.skip("needs the openssl command (Debian package openssl)")


@pytest.fixture
def fleet(tmp_path: Path, fleet_tls: TlsFiles) -> Iterator[FleetServer]:
    server = FleetServer(tmp_path / "fleet", fleet_tls, extra=("--resolve-rate", "20", "--resolve-burst", "20")).start()
    try:
        yield server
    finally:
        server.stop()
