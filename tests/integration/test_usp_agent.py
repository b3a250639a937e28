"""dsm behind RDK's real USP agent (obuspa + usp-pa-vendor-rdk, LCM build) on real rbus.

``-m usp_agent``: runs when ``DSM_OBUSPA`` names the agent and ``DSM_RBUS_LIBRARY`` /
``DSM_RTROUTED`` name librbus and its broker; skipped with the reason otherwise. The stack
(rtrouted, a PandM stand-in, dsm, the agent) runs in a private mount namespace
(tests/support/usp_stack.py), which sees only the stack's work directory: DU archives go
there. The test drives the agent with ``obuspa -c``. An async
command has completed in USP when its ``Device.LocalAgent.Request.{i}`` row is gone (the
agent removes it when it sends OperationComplete).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lcm_helpers import build_du, eventually
from tests.support.httpserver import FileServer
from tests.support.usp_stack import UspStack, find_agent, usp_stack

FOUND = find_agent()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.usp_agent,
    pytest.mark.skipif(isinstance(FOUND, str), reason=str(FOUND)),
]

SM = "Device.SoftwareModules."
DROP_IN = Path(__file__).resolve().parents[2] / "integration" / "usp-pa" / "rbus-timeout.conf"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[UspStack]:
    assert not isinstance(FOUND, str)
    agent, tools = FOUND
    with usp_stack(tmp_path / "usp", agent, tools) as running:
        yield running


def values(text: str) -> dict[str, str]:
    """``path => value`` lines of an ``obuspa -c get`` answer."""
    return {m[1]: m[2] for m in re.finditer(r"^(\S+) => ?(.*)$", text, re.M)}


def install(stack: UspStack, url: str) -> None:
    answer = stack.cli("operate", f"{SM}InstallDU(URL={url},ExecutionEnvRef={SM}ExecEnv.1)")
    assert "Started successfully" in answer, answer


def requests(stack: UspStack) -> dict[str, str]:
    return values(stack.cli("get", "Device.LocalAgent.Request."))


def dsm_status(stack: UspStack, du: int) -> str:
    return stack.dsm.get(f"{SM}DeploymentUnit.").get(f"{SM}DeploymentUnit.{du}.Status", "")


def test_commands_rows_and_the_full_model_through_the_agent(stack: UspStack) -> None:
    install(stack, f"file://{build_du(stack.work, 'web')}")
    # ObjectCreation from the row events; OperationComplete (the request is gone).
    eventually(lambda: values(stack.cli("get", f"{SM}DeploymentUnit.1.Status")).get(f"{SM}DeploymentUnit.1.Status")
               == "Installed", 30, "DeploymentUnit.1 through the agent")  # fmt: skip
    eventually(lambda: not requests(stack), 30, "InstallDU() to complete in USP")
    eu = f"{SM}ExecutionUnit.1."
    # Parameters the LCM build does not register reach USP through integration/usp-pa/*.conf.
    got = values(stack.cli("get", eu))
    assert (got[eu + "Vendor"], got[eu + "Version"], got[eu + "ExecutionEnvRef"]) == ("acme", "1.0.0", f"{SM}ExecEnv.1")
    answer = stack.cli("operate", f"{eu}SetRequestedState(RequestedState=Active)")
    assert "completed successfully" in answer, answer
    eventually(lambda: values(stack.cli("get", eu + "Status"))[eu + "Status"] == "Active", 20, "the EU to run")
    # Agent defects, as documented in integration/usp-tr069.md: booleans as True (3), and
    # sets of InitialRunLevel failing in the agent on a stale errno (5): dsm never sees them.
    assert values(stack.cli("get", f"{SM}ExecEnv.1.Enable"))[f"{SM}ExecEnv.1.Enable"] == "True"
    assert "Failed to set" in stack.cli("set", f"{SM}ExecEnv.1.InitialRunLevel", "3")
    assert stack.dsm.get(f"{SM}ExecEnv.1.InitialRunLevel")[f"{SM}ExecEnv.1.InitialRunLevel"] == "0"


def test_the_agent_honours_the_rbus_timeout_of_its_environment(stack: UspStack) -> None:
    archives = stack.work / "archives"
    slow, later = build_du(archives, "slow"), build_du(archives, "later")
    with FileServer(archives) as server:
        server.chunk_delay = 3.0 / max(1, slow.stat().st_size // (64 * 1024))  # ~3 s per download
        # librbus's 1 s: the agent gives up on InstallDU() before dsm answers.
        stack.start_agent({"RBUS_SET_DEFAULT_TIMEOUT": "1000"})
        install(stack, server.url(slow.name))
        eventually(lambda: dsm_status(stack, 1) == "Installed", 30, "the slow install")
        assert requests(stack), "the agent completed an operation it had timed out"
        # The shipped drop-in's value: the same slow install completes in USP.
        (timeout,) = re.findall(r"^Environment=RBUS_SET_DEFAULT_TIMEOUT=(\d+)$", DROP_IN.read_text(), re.M)
        assert int(timeout) > 3600 * 1000  # above dsm's default lcm.operation_timeout
        stack.start_agent({"RBUS_SET_DEFAULT_TIMEOUT": timeout})
        install(stack, server.url(later.name))
        eventually(lambda: dsm_status(stack, 2) == "Installed", 30, "the second slow install")
        eventually(lambda: not requests(stack), 10, "InstallDU() to complete in USP")


def test_after_dsm_restarts_new_rows_reach_usp_once_the_agent_restarts(stack: UspStack) -> None:
    install(stack, f"file://{build_du(stack.work, 'first')}")
    eventually(lambda: f"{SM}DeploymentUnit.1.Status" in values(stack.cli("get", f"{SM}DeploymentUnit.")), 30)
    eventually(lambda: not requests(stack), 30, "the first InstallDU() to complete in USP")
    stack.restart_dsm()
    install(stack, f"file://{build_du(stack.work, 'second')}")
    eventually(lambda: dsm_status(stack, 2) == "Installed", 30, "the install after the restart")
    eventually(lambda: not requests(stack), 30, "InstallDU() to complete in USP")
    # What remains (integration/usp-tr069.md, "Provider restart"): the agent's row-event
    # subscription did not survive, so it does not know the new row...
    assert f"{SM}DeploymentUnit.2.Status" not in values(stack.cli("get", f"{SM}DeploymentUnit."))
    # ...until it restarts and reads the tables again.
    stack.start_agent()
    got = values(stack.cli("get", f"{SM}DeploymentUnit."))
    assert got[f"{SM}DeploymentUnit.1.Status"] == got[f"{SM}DeploymentUnit.2.Status"] == "Installed"


@pytest.mark.parametrize("component", ["dsm-tr181", "eRT.com.cisco.spvtg.ccsp.dsm"])
def test_without_the_data_model_files_the_component_name_decides(component: str, tmp_path: Path) -> None:
    """Without usp_dm_*.conf the agent discovers the model on rbus and writes them itself."""
    assert not isinstance(FOUND, str)
    agent, tools = FOUND
    with usp_stack(tmp_path / "usp", agent, tools, component=component, start_agent=False) as stack:
        # It stops either way here: the PandM stand-in has an undotted name, so discovery also
        # misses X_RDKCENTRAL-COM_LastRebootReason, which it needs in its schema.
        with pytest.raises(RuntimeError, match="exited"):
            stack.start_agent(dm_files=False)
        discovered = (stack.work / "usp-pa" / "usp_dm_params.conf").read_text()
        if "." in component:  # our elements are taken, and clash with the LCM layer's
            assert f"{SM}ExecEnv.{{i}}.Vendor" in discovered
            assert "already exists in schema" in stack.trace()
        else:  # undotted components are skipped: the LCM build keeps its own part alone
            assert SM not in discovered
            assert "already exists in schema" not in stack.trace()
