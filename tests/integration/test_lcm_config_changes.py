"""The configuration changes between runs: an ExecEnv removed while it still holds DUs is
served with Status Error, its DUs stay visible and can be uninstalled, nothing starts."""

from pathlib import Path

import pytest

from tests.integration.lcm_helpers import EE, SM, build_du, install, needs_runc, operate, rows, value
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]


def test_an_execenv_removed_from_the_configuration(tmp_path: Path) -> None:
    archive = build_du(tmp_path, "orphaned")
    two = [{"name": "default"}, {"name": "second"}]
    dsm = DsmDaemon(tmp_path, execenvs=two).start()
    try:
        done = install(dsm, str(archive), ExecutionEnvRef=f"{EE}2")
        assert done.ok, done.fault
        du = done.event["DeploymentUnitRef"] + "."  # type: ignore[index]
    finally:
        dsm.cleanup()

    dsm = DsmDaemon(tmp_path, execenvs=[{"name": "default"}]).start()
    try:
        assert value(dsm, f"{EE}2.Status") == "Error" and value(dsm, f"{EE}2.Enable") == "false"
        assert value(dsm, f"{du}Status") == "Installed"
        eu = value(dsm, f"{du}ExecutionUnitList") + "."
        started = operate(dsm, f"{eu}SetRequestedState()", {"RequestedState": "Active"})
        assert started.fault and started.fault["code"] == 7012
        enabled = dsm.client().call("set", {"values": {f"{EE}2.Enable": "true"}, "allow_partial": True})
        assert enabled["errors"][0]["fault"]["code"] == 7007
        updated = operate(dsm, f"{du}Update()", {"URL": str(archive)})
        assert updated.fault and updated.fault["code"] == 7012
        removed = operate(dsm, f"{du}Uninstall()")
        assert removed.ok and removed.event["CurrentState"] == "Uninstalled"  # type: ignore[index]
        assert rows(dsm, f"{SM}DeploymentUnit.") == []
    finally:
        dsm.cleanup()

    dsm = DsmDaemon(tmp_path, execenvs=[{"name": "default"}]).start()
    try:
        assert rows(dsm, f"{SM}ExecEnv.") == [f"{EE}1."]  # nothing holds it any more
    finally:
        dsm.cleanup()
