"""The core (schema, tree, LCM) imports no adapter: buses, packagers, runtimes, the store,
the daemon and the CLI sit outside it and are chosen by configuration."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "dsm_tr181"
CORE = ("schema", "tree", "lcm", "containerspec")
ADAPTERS = (
    "dsm_tr181.buses",
    "dsm_tr181.packagers",
    "dsm_tr181.runtimes",
    "dsm_tr181.store",
    "dsm_tr181.volumes",
    "dsm_tr181.network",
    "dsm_tr181.secretbox",
    "dsm_tr181.daemon",
    "dsm_tr181.cli",
    "dsm_tr181.control_client",
    "dsm_tr181.config",
    "dsm_tr181.glib_thread",
    "dsm_tr181.adapters",
    "dsm_tr181.signing",
)
HEAVY = ("cffi", "gi", "pydbus", "sqlite3", "cryptography")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_adapter() -> None:
    offenders = []
    for part in CORE:
        for path in sorted((PACKAGE / part).rglob("*.py")):
            for name in imports(path):
                if name.startswith(ADAPTERS) or name.split(".")[0] in HEAVY:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert offenders == []


def test_lxml_is_only_in_the_loader() -> None:
    users = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "lxml" for name in imports(path))
    )
    assert users == ["dsm_tr181/schema/loader.py"]
