"""dsm behind RDK's real USP agent (obuspa + usp-pa-vendor-rdk, LCM build) on real rbus.

``-m usp_agent``: runs when ``DSM_OBUSPA`` names the agent and ``DSM_RBUS_LIBRARY`` /
``DSM_RTROUTED`` name librbus and its broker; skipped with the reason otherwise. The stack
(rtrouted, a PandM stand-in, dsm, the agent) runs in a private mount namespace
(tests/support/usp_stack.py), which sees only the stack's work directory: DU archives go
there. The test drives the agent with ``obuspa -c`` and reads what a controller receives —
the Notify messages (OperationComplete, ``DUStateChange!``, ObjectCreation/ObjectDeletion) —
from the agent's protocol trace.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lcm_helpers import build_du, eventually
from tests.support.httpserver import FileServer
from tests.support.usp_stack import Notify, UspStack, find_agent, usp_stack

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
    with usp_stack(tmp_path / "usp", FOUND) as running:
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


def notified(stack: UspStack, kind: str, path: str, name: str = "", **args: str) -> Notify | None:
    """The first Notify of ``kind`` on ``path`` (and ``name``) whose arguments include ``args``."""
    for notify in stack.notifications():
        if (notify.kind, notify.path, notify.name) == (kind, path, name) and args.items() <= notify.args.items():
            return notify
    return None


def await_notify(stack: UspStack, kind: str, path: str, name: str = "", **args: str) -> Notify:
    return eventually(lambda: notified(stack, kind, path, name, **args), 30, f"{kind} {path}{name} {args}")


def du_state_change(stack: UspStack, operation: str, du: int, **args: str) -> Notify:
    """The ``DUStateChange!`` of ``operation`` on DU ``du``, checked against the DU dsm serves."""
    ref = f"{SM}DeploymentUnit.{du}"
    event = await_notify(stack, "event", SM, "DUStateChange!", OperationPerformed=operation, DeploymentUnitRef=ref,
                         **args)  # fmt: skip
    assert set(event.args) == {"UUID", "DeploymentUnitRef", "Version", "CurrentState", "Resolved",
                               "ExecutionUnitRefList", "StartTime", "CompleteTime", "OperationPerformed",
                               "Fault.FaultCode", "Fault.FaultString"}  # fmt: skip
    assert event.args["Resolved"] == "True"  # the agent's spelling of true (defect 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event.args["CompleteTime"]), event.args
    assert event.args["StartTime"] <= event.args["CompleteTime"]
    return event


def test_a_controller_gets_every_outcome_through_the_agent(stack: UspStack) -> None:
    archives = stack.work / "archives"
    install(stack, f"file://{build_du(archives, 'web')}")
    done = await_notify(stack, "oper_complete", SM, "InstallDU()")
    assert done.failure is None and done.args == {}  # outputs dropped by the agent (defect 2)
    event = du_state_change(stack, "Install", 1, CurrentState="Installed", **{"Fault.FaultCode": "0"})
    du = stack.dsm.get(f"{SM}DeploymentUnit.1.")
    assert (event.args["UUID"], event.args["Version"]) == (du[f"{SM}DeploymentUnit.1.UUID"], "1.0.0")
    assert event.args["ExecutionUnitRefList"] == du[f"{SM}DeploymentUnit.1.ExecutionUnitList"] == f"{SM}ExecutionUnit.1"
    assert event.args["Fault.FaultString"] == ""
    await_notify(stack, "obj_creation", f"{SM}DeploymentUnit.1.")
    await_notify(stack, "obj_creation", f"{SM}ExecutionUnit.1.")
    eu = f"{SM}ExecutionUnit.1."
    # Parameters the LCM build does not register reach USP through integration/usp-pa/*.conf.
    got = values(stack.cli("get", eu))
    assert (got[eu + "Vendor"], got[eu + "Version"], got[eu + "ExecutionEnvRef"]) == ("acme", "1.0.0", f"{SM}ExecEnv.1")
    # The LCM build registers SetRequestedState() synchronous: its answer is the OperateResp,
    # and TR-369 sends OperationComplete only for asynchronous commands.
    answer = stack.cli("operate", f"{eu}SetRequestedState(RequestedState=Active)")
    assert "completed successfully" in answer, answer
    eventually(lambda: values(stack.cli("get", eu + "Status"))[eu + "Status"] == "Active", 20, "the EU to run")
    # Update to a new version: OperationComplete on the DU, DUStateChange! with the new version.
    update = stack.cli("operate", f"{SM}DeploymentUnit.1.Update(URL=file://{build_du(archives, 'web', '2.0.0')})")
    assert "Started successfully" in update, update
    await_notify(stack, "oper_complete", f"{SM}DeploymentUnit.1.", "Update()")
    du_state_change(stack, "Update", 1, Version="2.0.0", CurrentState="Installed", **{"Fault.FaultCode": "0"})
    # A failed Update and a failed InstallDU(): DUStateChange! carries the fault; no
    # OperationComplete (defect 1), the requests stay in Device.LocalAgent.Request. (Requested).
    stack.cli("operate", f"{SM}DeploymentUnit.1.Update(URL=file://{archives / 'web-2.0.0.tar'})")
    failed = du_state_change(stack, "Update", 1, Version="2.0.0", **{"Fault.FaultCode": "7226"})
    assert failed.args["Fault.FaultString"], failed.args
    install(stack, f"file://{archives / 'missing.tar'}")
    refused = eventually(lambda: next((n for n in stack.notifications() if n.name == "DUStateChange!" and
                                       n.args["OperationPerformed"] == "Install" and n.args["Fault.FaultCode"] != "0"),
                                      None), 30, "the failed install's DUStateChange!")  # fmt: skip
    assert refused.args["Fault.FaultString"] and refused.args["CurrentState"] == "Failed", refused.args
    # the agent's callback may come after dsm's event: wait for both refusals in its log
    eventually(lambda: stack.trace().count("Mismatch in calling arguments err_code=7022") == 2, 30, "both 7022s")
    assert [n.name for n in stack.notifications() if n.kind == "oper_complete"] == ["InstallDU()", "Update()"]
    pending = requests(stack)
    commands = sorted(v for k, v in pending.items() if k.endswith(".Command"))
    assert commands == [f"{SM}DeploymentUnit.1.Update()", f"{SM}InstallDU()"], pending
    assert {v for k, v in pending.items() if k.endswith(".Status")} == {"Requested"}, pending
    # Uninstall: OperationComplete, DUStateChange! (Uninstalled), the rows deleted.
    assert "Started successfully" in stack.cli("operate", f"{SM}DeploymentUnit.1.Uninstall()")
    await_notify(stack, "oper_complete", f"{SM}DeploymentUnit.1.", "Uninstall()")
    du_state_change(stack, "Uninstall", 1, CurrentState="Uninstalled", ExecutionUnitRefList=f"{SM}ExecutionUnit.1")
    await_notify(stack, "obj_deletion", f"{SM}DeploymentUnit.1.")
    await_notify(stack, "obj_deletion", f"{SM}ExecutionUnit.1.")
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


def rows_notified(stack: UspStack) -> list[tuple[str, str]]:
    return sorted((n.kind, n.path) for n in stack.notifications() if n.kind.startswith("obj_"))


def test_after_dsm_restarts_every_outcome_and_row_still_reaches_the_controller(stack: UspStack) -> None:
    install(stack, f"file://{build_du(stack.work, 'first')}")
    await_notify(stack, "obj_creation", f"{SM}DeploymentUnit.1.")
    await_notify(stack, "oper_complete", SM, "InstallDU()")
    stack.restart_dsm()
    install(stack, f"file://{build_du(stack.work, 'second')}")
    # librbus restores the agent's subscriptions — the events' and, since dsm registers each
    # table by the name the agent subscribed to, the tables' row events (usp-tr069.md,
    # "Provider restart"): the outcome and the new rows reach the controller.
    du_state_change(stack, "Install", 2, CurrentState="Installed", **{"Fault.FaultCode": "0"})
    eventually(lambda: [n.name for n in stack.notifications() if n.kind == "oper_complete"] == ["InstallDU()"] * 2,
               30, "the second InstallDU() to complete in USP")  # fmt: skip
    await_notify(stack, "obj_creation", f"{SM}DeploymentUnit.2.")
    await_notify(stack, "obj_creation", f"{SM}ExecutionUnit.2.")
    got = values(stack.cli("get", f"{SM}DeploymentUnit."))
    assert got[f"{SM}DeploymentUnit.1.Status"] == got[f"{SM}DeploymentUnit.2.Status"] == "Installed"
    assert "Started successfully" in stack.cli("operate", f"{SM}DeploymentUnit.1.Uninstall()")
    du_state_change(stack, "Uninstall", 1, CurrentState="Uninstalled")
    await_notify(stack, "oper_complete", f"{SM}DeploymentUnit.1.", "Uninstall()")
    every_row = [
        ("obj_creation", f"{SM}DeploymentUnit.1."), ("obj_creation", f"{SM}DeploymentUnit.2."),
        ("obj_creation", f"{SM}ExecutionUnit.1."), ("obj_creation", f"{SM}ExecutionUnit.2."),
        ("obj_deletion", f"{SM}DeploymentUnit.1."), ("obj_deletion", f"{SM}ExecutionUnit.1."),
    ]  # fmt: skip
    with contextlib.suppress(AssertionError):
        eventually(lambda: rows_notified(stack) == every_row, 30, "ObjectCreation/ObjectDeletion of every row")
    assert rows_notified(stack) == every_row
    assert f"{SM}DeploymentUnit.1.Status" not in values(stack.cli("get", f"{SM}DeploymentUnit."))
    assert "mutex" not in stack.dsm.log().lower()  # librbus re-registered without lock errors


@pytest.mark.parametrize("component", ["dsm-tr181", "eRT.com.cisco.spvtg.ccsp.dsm"])
def test_without_the_data_model_files_the_component_name_decides(component: str, tmp_path: Path) -> None:
    """Without usp_dm_*.conf the agent discovers the model on rbus and writes them itself."""
    assert not isinstance(FOUND, str)
    with usp_stack(tmp_path / "usp", FOUND, component=component, start_agent=False) as stack:
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
