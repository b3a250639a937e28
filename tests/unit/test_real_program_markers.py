"""`-m dobby_real` selects every test run against the real DobbyDaemon (README, Tests), and
nothing else: the runtime contract's real back end as well as the fidelity and availability
suites' ``[real]`` cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SUITES = (
    "tests/contract/test_runtime_contract.py",
    "tests/integration/test_dobby_fidelity.py",
    "tests/integration/test_runtime_availability.py",
)


def collected(marker_expression: str) -> list[str]:
    options = ("--collect-only", "-q", "-p", "no:cacheprovider", "-m", marker_expression)
    command = [sys.executable, "-m", "pytest", *options, *SUITES]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def runs_the_real_daemon(node_id: str) -> bool:
    return node_id.endswith(("[real]", "[dobby-daemon]"))


def test_dobby_real_selects_every_real_dobby_test_and_only_those() -> None:
    selected = collected("dobby_real")
    assert any(i.endswith("[dobby-daemon]") for i in selected), "the runtime contract's real DobbyDaemon back end"
    assert any(i.endswith("[real]") for i in selected)
    assert all(runs_the_real_daemon(i) for i in selected), selected
    assert not [i for i in collected("not dobby_real") if runs_the_real_daemon(i)]
