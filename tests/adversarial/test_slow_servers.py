"""Items 3 and 10 (stall count): slow and stalled servers.

A download slower than ``min_rate`` over ``rate_window`` fails (7033) instead of holding
an operation slot for an hour; downloads never hold up an Uninstall (its slots are its
own); Uninstall() of a DU still downloading is how an operator ends a stuck transfer; a
stall is reported with the bytes that did arrive."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.fetch import FetchOptions, fetch
from dsm_tr181.packagers.httpget import HttpOptions
from dsm_tr181.packagers.worker import Cancel
from tests.adversarial.archives import bundle_members, member, tar_bytes, write
from tests.integration.lcm_helpers import DU, eventually, install, operate, row, rows, top_entries
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.integration

READ_TIMEOUT = 4.0  # how long a stalled server holds a slot here (an hour-long download in the field)


@pytest.fixture(scope="module")
def served(work: Path) -> Path:
    directory = work / "served"
    directory.mkdir()
    padding = member("rootfs/padding", os.urandom(512 * 1024))
    (directory / "big.tar").write_bytes(tar_bytes([*bundle_members(), padding]))
    return directory


@pytest.fixture(scope="module")
def slow_dsm(work: Path) -> Iterator[DsmDaemon]:
    (work / "slow").mkdir()
    tar = {"min_rate": 256 * 1024, "rate_window": 1.0, "read_timeout": READ_TIMEOUT, "sibling_digest": False}
    dsm = DsmDaemon(work / "slow", lcm={"max_parallel_operations": 2}, extra={"packager.tar": tar})
    dsm.start()
    try:
        yield dsm
    finally:
        dsm.cleanup()


def test_a_download_below_the_minimum_rate_fails_and_frees_its_slot(slow_dsm: DsmDaemon, served: Path) -> None:
    with FileServer(served) as server:
        server.chunk_delay = 0.5  # 128 KiB/s, below the 256 KiB/s asked for
        started = time.monotonic()
        outcome = install(slow_dsm, server.url("big.tar"))
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DOWNLOAD_INCOMPLETE.usp, outcome
    assert "too slow" in outcome.fault["message"]
    assert time.monotonic() - started < READ_TIMEOUT  # the rate, not a timeout, ended it
    assert outcome.event is not None and outcome.event["CurrentState"] == "Failed"
    assert rows(slow_dsm, DU) == [] and top_entries(slow_dsm.state / "bundles") == []


def test_stalled_downloads_neither_hold_up_an_uninstall_nor_outlive_an_uninstall_of_their_du(
    slow_dsm: DsmDaemon, served: Path, work: Path
) -> None:
    local = f"file://{write(work, 'local', tar_bytes(bundle_members()))}"
    assert install(slow_dsm, local).ok
    (installed,) = rows(slow_dsm, DU)
    with FileServer(served) as server:
        server.stall_after = 64 * 1024
        outcomes: list[object] = []

        def install_stalled(n: int) -> None:
            outcomes.append(install(slow_dsm, server.url("big.tar") + f"?n={n}"))

        threads = [threading.Thread(target=install_stalled, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()

        def both_stalled() -> list[str] | None:
            others = [r for r in rows(slow_dsm, DU) if r != installed]
            downloads = [r for r in server.requests if r.path == "/big.tar"]
            return others if len(others) == 2 and len(downloads) == 2 else None

        stalled = eventually(both_stalled, 10, "both stalled downloads")

        started = time.monotonic()  # both operation slots are held by stalled downloads
        assert operate(slow_dsm, installed + "Uninstall()").ok
        assert time.monotonic() - started < READ_TIMEOUT / 2
        assert all(row(slow_dsm, du)["Status"] == "Installing" for du in stalled)  # still stalled meanwhile

        started = time.monotonic()  # the operator ends a stuck transfer: Uninstall() of its DU
        events = slow_dsm.events("Device.SoftwareModules.")
        ended = operate(slow_dsm, stalled[0] + "Uninstall()")
        assert ended.ok, ended
        assert time.monotonic() - started < READ_TIMEOUT / 2
        install_event = events.du_state_change("Install", timeout=5)
        assert (install_event["CurrentState"], install_event["Fault.FaultCode"]) == ("Failed", "7023")
        assert events.du_state_change("Uninstall", timeout=5)["CurrentState"] == "Uninstalled"
        for thread in threads:
            thread.join(READ_TIMEOUT + 10)
    assert rows(slow_dsm, DU) == [] and top_entries(slow_dsm.state / "bundles") == []


def test_a_stall_is_reported_with_the_bytes_that_arrived(served: Path, tmp_path: Path) -> None:
    options = FetchOptions(HttpOptions(None, True, 2.0, 0.5, 0), 1 << 30, sibling_digest=False)
    with FileServer(served) as server:
        server.stall_after = 64 * 1024
        with pytest.raises(Fault) as raised:
            source = PackageSource(server.url("big.tar"), digest="sha256:" + "0" * 64)  # stored first
            with fetch(source, options, lambda done, total: None, Cancel(), download_dir=tmp_path,
                       unpack_dir=tmp_path):  # fmt: skip
                pass
    assert raised.value.code is FaultCode.DOWNLOAD_INCOMPLETE
    assert "stalled after 65536 bytes" in raised.value.message
