"""Fixtures of the fleet tests: the test CA, a running HTTPS repository server, a real
PostgreSQL, and the repository interface on each store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.fleet.repository import Repository
from dsm_tr181.fleet.sqlite_repo import SqliteRepository
from tests.support.fleetserver import FleetServer
from tests.support.httpserver import TlsFiles, make_tls_files
from tests.support.postgres import Postgres, running_postgres
from tests.support.postgres import unavailable as postgres_unavailable


@pytest.fixture(scope="session")
def fleet_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls_files(tmp_path_factory.mktemp("fleet-tls"))
    except FileNotFoundError:
        pytest.skip("needs the openssl command (Debian package openssl)")


def _serve(work: Path, tls: TlsFiles, postgres: str = "") -> Iterator[FleetServer]:
    options = ("--resolve-rate", "20", "--resolve-burst", "20", "--access-log")
    server = FleetServer(work, tls, postgres, extra=options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, fleet_tls: TlsFiles) -> Iterator[FleetServer]:
    """A repository server on SQLite."""
    yield from _serve(tmp_path / "fleet", fleet_tls)


@pytest.fixture(params=["sqlite", "postgres"])
def any_fleet(request: pytest.FixtureRequest, tmp_path: Path, fleet_tls: TlsFiles) -> Iterator[FleetServer]:
    """A repository server on each store (PostgreSQL: a fresh database of a real server)."""
    dsn = request.getfixturevalue("postgres").new_database() if request.param == "postgres" else ""
    yield from _serve(tmp_path / "fleet", fleet_tls, dsn)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    """The repository interface on each store (PostgreSQL: a fresh database of a real server)."""
    if request.param == "sqlite":
        repo: Repository = SqliteRepository(tmp_path / "fleet.db")
    else:
        from dsm_tr181.fleet.postgres_repo import PostgresRepository

        repo = PostgresRepository(request.getfixturevalue("postgres").new_database())
    try:
        yield repo
    finally:
        repo.close()
