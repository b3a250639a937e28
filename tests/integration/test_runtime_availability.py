"""A runtime that is absent, crashes or comes back never takes the daemon down.

The real daemon serves a runc ExecEnv and a Dobby ExecEnv; Dobby (the stand-in, and the
real DobbyDaemon with ``-m dobby_real``) is on a private bus: absent at first, then
started, killed (a crash) and started again.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dobby_daemons import Dobby
from tests.integration.lcm_helpers import (
    EE,
    INSTALL_DU,
    build_du,
    eu_of,
    eventually,
    operate,
    row,
    set_values,
    value,
    wait_status,
)
from tests.integration.test_runtime_dobby import NEEDS_BUS_AND_RUNC
from tests.support.daemon import DsmDaemon

pytestmark = NEEDS_BUS_AND_RUNC

RUNC_EE, DOBBY_EE = EE + "1.", EE + "2."


@pytest.fixture
def dsm(tmp_path: Path, dobby: Dobby) -> Iterator[DsmDaemon]:
    daemon = DsmDaemon(
        tmp_path,
        execenvs=[{"name": "runc", "runtime": "runc"}, {"name": "dobby", "runtime": "dobby"}],
        extra={"runtime.dobby": {"bus_address": dobby.bus.address, "call_timeout": 2.0}},
    )
    try:
        yield daemon
    finally:
        daemon.cleanup()


def ee_status(dsm: DsmDaemon, ee: str, status: str) -> str:
    return eventually(lambda: value(dsm, ee + "Status") == status and status, 15, f"{ee}Status = {status}")


def install_and_start(dsm: DsmDaemon, work: Path, name: str, ee: str) -> str:
    outcome = operate(dsm, INSTALL_DU, {"URL": str(build_du(work, name)), "ExecutionEnvRef": ee.rstrip(".")})
    assert outcome.ok, outcome
    eu = eu_of(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")  # type: ignore[index]
    set_values(dsm, {eu + "AutoStart": True})
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")
    return eu


def test_dobby_absent_then_appearing_then_crashing_then_back(dsm: DsmDaemon, dobby: Dobby, tmp_path: Path) -> None:
    # No Dobby on the bus: the daemon starts, serves the tree, the Dobby ExecEnv is Error.
    dsm.start()
    assert value(dsm, DOBBY_EE + "Status") == "Error"
    assert value(dsm, RUNC_EE + "Status") == "Up"
    assert "runtime dobby is unavailable (Dobby not available: org.rdk.dobby is not on the bus)" in dsm.log()
    refused = operate(dsm, INSTALL_DU, {"URL": str(build_du(tmp_path, "early")), "ExecutionEnvRef": DOBBY_EE[:-1]})
    assert refused.fault is not None and refused.fault["code"] == 7230
    assert "is in Error: Dobby not available: org.rdk.dobby is not on the bus" in refused.fault["message"]
    # ...while the runc ExecEnv works.
    runc_eu = install_and_start(dsm, tmp_path, "beside", RUNC_EE)

    with dobby.run() as first:
        ee_status(dsm, DOBBY_EE, "Up")  # on its Ready signal / new owner, not a restart of dsm
        dobby_eu = install_and_start(dsm, tmp_path, "boxed", DOBBY_EE)
        first.send_signal(signal.SIGKILL)  # Dobby crashes
        first.wait(5)

        ee_status(dsm, DOBBY_EE, "Error")
        idle = wait_status(dsm, dobby_eu, "Idle")
        assert idle["ExecutionFaultCode"] in ("FailureWhileActive", "UnStartable"), idle
        assert row(dsm, runc_eu)["Status"] == "Active"
        assert dsm.process is not None and dsm.process.poll() is None

        with dobby.run():  # a new instance (it kills what the crashed one left)
            ee_status(dsm, DOBBY_EE, "Up")
            active = wait_status(dsm, dobby_eu, "Active")  # AutoStart: started again
            assert active["ExecutionFaultCode"] == "NoFault"
            assert row(dsm, runc_eu)["Status"] == "Active"


def test_runtime_binary_missing_at_start_then_installed(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "runc"
    (tmp_path / "dsm").mkdir()
    dsm = DsmDaemon(tmp_path / "dsm", extra={"runtime.runc": {"binary": str(binary)}})
    try:
        dsm.start()  # serves the tree although runc cannot be found
        assert value(dsm, EE + "1.Status") == "Error"
        assert f"runtime runc is unavailable: OCI runtime adapter needs '{binary}'" in dsm.log()
        binary.parent.mkdir()
        shutil.copy(shutil.which("runc") or "", binary)
        ee_status(dsm, EE + "1.", "Up")  # the next probe creates the adapter
        eu = install_and_start(dsm, tmp_path, "late", EE + "1.")
        assert row(dsm, eu)["Status"] == "Active"
    finally:
        dsm.cleanup()
