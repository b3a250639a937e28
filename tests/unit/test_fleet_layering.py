"""The fleet package keeps the product's layering: the rule and the repository port are pure,
each store is its own adapter, and the daemon's side needs none of the server's packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
FLEET = Path(__file__).resolve().parents[2] / "dsm_tr181" / "fleet"
SERVER_ONLY = {"aiohttp", "yaml", "psycopg", "sqlite3"}


def imports(name: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse((FLEET / name).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module if node.module.startswith("dsm_tr181") else node.module.split(".")[0])
    return found


@pytest.mark.parametrize("name", ["model.py", "matching.py", "repository.py"])
def test_rule_and_port_are_pure(name: str) -> None:
    assert not imports(name) & (SERVER_ONLY | {"dsm_tr181.tree.datamodel", "dsm_tr181.lcm.manager"})


@pytest.mark.parametrize("name", ["__init__.py", "agent.py", "client.py", "settings.py", "ownership.py"])
def test_the_daemon_side_needs_no_server_package(name: str) -> None:
    assert not imports(name) & SERVER_ONLY


def test_each_store_is_its_own_adapter() -> None:
    assert "sqlite3" in imports("sqlite_repo.py") and "psycopg" not in imports("sqlite_repo.py")
    assert "psycopg" in imports("postgres_repo.py") and "sqlite3" not in imports("postgres_repo.py")
    assert not imports("server.py") & {"sqlite3", "psycopg"}
