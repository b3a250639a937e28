"""Item 9 at the real limit: the daemon started with 128 file descriptors and 400 clients
that connect and never speak. The connections over its cap (kept below the limit) are
refused at once with a clear 7005, the log gets a few lines instead of a traceback per
accept, and once the idle clients leave the daemon serves again."""

from __future__ import annotations

import resource
import select
import socket
import time
from pathlib import Path

import pytest

from dsm_tr181.control_client import DaemonError, read_frame
from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import eventually
from tests.support.daemon import DsmDaemon

pytestmark = pytest.mark.integration

LIMIT = 128


def test_idle_clients_at_the_descriptor_limit_are_refused_quietly(tmp_path: Path) -> None:
    dsm = DsmDaemon(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))  # inherited by the daemon only
    try:
        dsm.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    clients: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(dsm.socket))
            clients.append(sock)
        time.sleep(1.0)  # the daemon has answered every connection it refuses
        refused = 0
        for sock in clients:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                reply = read_frame(sock)
                assert reply is not None and b'"code": %d' % FaultCode.RESOURCES_EXCEEDED.usp in reply, reply
                refused += 1
        assert 400 - LIMIT < refused < 400  # some were served: the cap sits below the limit, not at zero
        log = dsm.log()
        assert "Traceback" not in log
        assert log.count("refusing a control connection") <= 5
        for sock in clients:
            sock.close()
        clients.clear()

        def served() -> bool:  # once the daemon has seen the idle clients go
            try:
                return bool(dsm.call("get", {"paths": ["Device.SoftwareModules.ExecEnv.1.Name"]}))
            except DaemonError:
                return False

        eventually(served, 10, "a get served again")
    finally:
        for sock in clients:
            sock.close()
        dsm.cleanup()
