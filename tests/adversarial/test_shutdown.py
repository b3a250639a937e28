"""Item 8: SIGTERM while operations run. The daemon stops accepting work at once, gives the
running operations ``shutdown_timeout`` to end, rolls back what is still under way (with its
DUStateChange!, sent while the clients are still connected), and only then closes the store:
no "closed database" traceback, nothing left for the next start."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.adversarial.archives import bundle_members, member, tar_bytes
from tests.integration.lcm_helpers import DU, EE1, INSTALL_DU, eventually, install, operate_async, rows, top_entries
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.integration


def test_sigterm_during_an_install_ends_it_cleanly_before_the_store_closes(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    padding = member("rootfs/padding", os.urandom(512 * 1024))  # 8 chunks of 64 KiB, one per 0.5 s
    (served / "slow.tar").write_bytes(tar_bytes([*bundle_members(), padding]))
    (served / "small.tar").write_bytes(tar_bytes(bundle_members()))
    (tmp_path / "d").mkdir()
    dsm = DsmDaemon(tmp_path / "d", lcm={"shutdown_timeout": 1.5})
    with FileServer(served) as server:
        server.chunk_delay = 0.5
        dsm.start()
        try:
            events = dsm.events("Device.SoftwareModules.")
            operate_async(dsm, INSTALL_DU, {"URL": server.url("slow.tar"), "ExecutionEnvRef": EE1})
            eventually(lambda: rows(dsm, DU), 10, "the slow install's row")
            assert dsm.process is not None
            started = time.monotonic()
            dsm.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            refused = install(dsm, f"file://{served / 'small.tar'}")  # during the drain: no new work
            assert refused.fault is not None and refused.fault["code"] == FaultCode.REQUEST_DENIED.usp, refused
            assert "shutting down" in refused.fault["message"]
            event = events.du_state_change("Install", timeout=10)
            assert (event["CurrentState"], event["Fault.FaultCode"]) == ("Failed", str(FaultCode.COMMAND_CANCELED.usp))
            assert dsm.wait_exit(10) == 0
            assert time.monotonic() - started < 6  # bounded by shutdown_timeout, not by the download
            log = dsm.log()
            assert "closed database" not in log and "Traceback" not in log, log[-3000:]
            dsm.start()
            assert rows(dsm, DU) == [] and top_entries(dsm.state / "bundles") == []
        finally:
            dsm.cleanup()
