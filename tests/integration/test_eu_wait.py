"""``dsmcli eu.start --wait`` / ``eu.stop --wait``: answered once the EU is Active / Idle,
against the real daemon and real runc containers; a start that fails is an error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lcm_helpers import build_du, eu_of, install, needs_runc, value
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]


@pytest.fixture(scope="module")
def dsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DsmDaemon]:
    work = tmp_path_factory.mktemp("eu-wait")
    (work / "dsm").mkdir()
    daemon = DsmDaemon(work / "dsm", lcm={"usage_interval": 60.0})
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


def dsmcli(dsm: DsmDaemon, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSM_SOCKET": str(dsm.socket)}
    command = [sys.executable, "-m", "dsm_tr181.cli", *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def installed_eu(dsm: DsmDaemon, work: Path, name: str, args: tuple[str, ...] | None = None) -> str:
    outcome = install(dsm, str(build_du(work, name, args=args)))
    assert outcome.ok and outcome.event is not None, outcome
    return eu_of(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")


def test_start_and_stop_wait_for_the_state(dsm: DsmDaemon, tmp_path: Path) -> None:
    eu = installed_eu(dsm, tmp_path, "waited")
    euid = value(dsm, eu + "EUID")
    started = dsmcli(dsm, "eu.start", "--wait", euid)
    assert (started.returncode, started.stdout) == (0, "EU Active\n"), started.stderr
    assert value(dsm, eu + "Status") == "Active"  # already, when the command returned
    assert f"{eu.rstrip('.')}: Active" in started.stderr
    assert dsmcli(dsm, "eu.start", "--wait", euid).stdout == "EU Active\n"  # Active already: at once
    stopped = dsmcli(dsm, "eu.stop", "--wait", euid)
    assert (stopped.returncode, stopped.stdout) == (0, "EU Idle\n"), stopped.stderr
    assert value(dsm, eu + "Status") == "Idle"
    assert dsmcli(dsm, "eu.start", euid).stdout == "Starting EU\n"  # without --wait: the original answer


def test_a_start_that_fails_is_an_error(dsm: DsmDaemon, tmp_path: Path) -> None:
    eu = installed_eu(dsm, tmp_path, "broken", args=("/no/such/program",))
    failed = dsmcli(dsm, "eu.start", "--wait", value(dsm, eu + "EUID"))
    assert failed.returncode == 1 and "error 7022" in failed.stderr, failed
    assert "did not become Active: FailureOnStart" in failed.stderr
    assert value(dsm, eu + "Status") == "Idle"
