"""An EU's output: the log cap holds at every moment, even through a burst, and
``dsmcli eu.logs EUID [--follow]`` prints it (real daemon, real runc, the real dsmcli)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.runtimes.logrotate import backup_path
from tests.integration.lcm_helpers import (
    DU,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    rows,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

CAP, BACKUPS = 256 * 1024, 2
LINE = "0123456789abcdefghijklmnopqrstuvwxyz"
BURST = 40_000_000  # bytes, written as fast as busybox can


@pytest.fixture(scope="module")
def dsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(tmp_path_factory.mktemp("eulogs"), lcm={"eu_log_max_bytes": CAP, "eu_log_backups": BACKUPS})
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(autouse=True)
def uninstall_all(dsm: DsmDaemon) -> Iterator[None]:
    yield
    for path in rows(dsm, DU):
        operate(dsm, path + "Uninstall()")


def started(dsm: DsmDaemon, name: str, script: str) -> tuple[str, Path]:
    outcome = install(dsm, build_du(dsm.work, name, args=("/bin/sh", "-c", script)).as_uri())
    assert outcome.ok, outcome
    eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    return eu, dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"


def dsmcli(dsm: DsmDaemon, *argv: str) -> list[str]:
    return [sys.executable, "-m", "dsm_tr181.cli", "--socket", str(dsm.socket), *argv]


def test_a_burst_never_takes_the_log_past_its_cap(dsm: DsmDaemon) -> None:
    script = f"trap 'exit 0' TERM; yes {LINE} | head -c {BURST}; echo burst-done; sleep 3600 & wait"
    largest, stop = [0, 0], threading.Event()
    log = dsm.state / "logs" / "placeholder"

    def watch() -> None:  # samples the files while the burst is written
        files = [log, *(backup_path(log, index) for index in range(1, BACKUPS + 2))]
        while not stop.is_set():
            sizes = []
            for path in files:
                try:
                    sizes.append(os.stat(path).st_size)
                except FileNotFoundError:
                    sizes.append(0)
            largest[0] = max(largest[0], sizes[0])
            largest[1] = max(largest[1], sum(sizes))

    eu, log = started(dsm, "burst", script)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        eventually(lambda: log.exists() and "burst-done" in log.read_text(errors="replace"), 60, "the burst")
    finally:
        stop.set()
        watcher.join()
    assert largest[0] <= CAP, largest
    assert largest[1] <= (BACKUPS + 1) * CAP, largest
    assert not backup_path(log, BACKUPS + 1).exists()
    # The newest output is all there, in order: the files end with the burst's last lines.
    kept = b"".join(p.read_bytes() for p in (backup_path(log, 2), backup_path(log, 1), log))
    tail = kept.split(b"\n")[-40:-2]
    assert tail and all(line in (LINE.encode(), LINE.encode()[: len(line)]) for line in tail)
    wait_status(dsm, eu, "Active")


def test_dsmcli_eu_logs_prints_and_follows_the_output(dsm: DsmDaemon) -> None:
    script = "trap 'exit 0' TERM; echo first; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    eu, log = started(dsm, "ticker", script)
    euid = value(dsm, eu + "EUID")
    eventually(lambda: log.exists() and "tick 2" in log.read_text(), 20, "some output")
    printed = subprocess.run(dsmcli(dsm, "eu.logs", euid), capture_output=True, text=True, timeout=20, check=True)
    lines = printed.stdout.splitlines()
    assert lines[0] == "first" and "tick 1" in lines and "tick 2" in lines
    follower = subprocess.Popen(dsmcli(dsm, "eu.logs", "--follow", euid), stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen.append(follower.stdout.readline().rstrip("\n"))
            ticks = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
            if ticks and ticks[-1] >= int(lines[-1].split()[1]) + 5:
                break
        ticks = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
        assert ticks == list(range(1, ticks[-1] + 1))  # from the start, in order, nothing twice
        assert ticks[-1] >= int(lines[-1].split()[1]) + 5  # and what came after the command started
    finally:
        follower.terminate()
        follower.wait(10)
