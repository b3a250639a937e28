"""dsm_tr181.lcm.states: every (state, request) pair of the three machines has one answer,
and that answer is the standard's (TR-181 2.19.1 texts quoted in the module)."""

from __future__ import annotations

import itertools
from enum import StrEnum

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import states
from dsm_tr181.lcm.states import (
    DU,
    EE,
    EU,
    DuRequest,
    DuStatus,
    EeRequest,
    EeStatus,
    EuRequest,
    EuStatus,
    Next,
    Refused,
    allow,
)
from dsm_tr181.schema import load_schema

pytestmark = pytest.mark.unit

# What the standard's text says, pair by pair: "->X" goes to X, "=X" is ignored (stays X),
# "!code" is refused with that USP code, "!code/event" is reported in the DUStateChange!.
EXPECTED_EU = {
    (EuStatus.IDLE, EuRequest.ACTIVE): "->Starting",
    (EuStatus.IDLE, EuRequest.IDLE): "=Idle",
    (EuStatus.IDLE, EuRequest.RESTART): "->Starting",  # "as if SetRequestedState(Active)"
    (EuStatus.STARTING, EuRequest.ACTIVE): "=Starting",
    (EuStatus.STARTING, EuRequest.IDLE): "->Stopping",
    (EuStatus.STARTING, EuRequest.RESTART): "->Restarting",
    (EuStatus.ACTIVE, EuRequest.ACTIVE): "=Active",
    (EuStatus.ACTIVE, EuRequest.IDLE): "->Stopping",
    (EuStatus.ACTIVE, EuRequest.RESTART): "->Restarting",
    (EuStatus.STOPPING, EuRequest.ACTIVE): "!7230",  # "the request is rejected and a fault raised"
    (EuStatus.STOPPING, EuRequest.IDLE): "=Stopping",
    (EuStatus.STOPPING, EuRequest.RESTART): "!7230",
    (EuStatus.RESTARTING, EuRequest.ACTIVE): "=Restarting",
    (EuStatus.RESTARTING, EuRequest.IDLE): "->Stopping",
    (EuStatus.RESTARTING, EuRequest.RESTART): "=Restarting",  # "no effect"
}

EXPECTED_DU = {
    **{(s, r): "!7229" for s in DuStatus for r in (DuRequest.UPDATE, DuRequest.UNINSTALL) if s != DuStatus.INSTALLED},
    (DuStatus.INSTALLED, DuRequest.UPDATE): "->Updating",
    (DuStatus.INSTALLED, DuRequest.UNINSTALL): "->Uninstalling",
    (DuStatus.INSTALLED, DuRequest.COMPLETE): "!7003",
    (DuStatus.INSTALLED, DuRequest.FAIL): "!7003",
    (DuStatus.INSTALLING, DuRequest.COMPLETE): "->Installed",
    (DuStatus.INSTALLING, DuRequest.FAIL): "->None",  # no instance after a failed install
    (DuStatus.UPDATING, DuRequest.COMPLETE): "->Installed",
    (DuStatus.UPDATING, DuRequest.FAIL): "->Installed",
    (DuStatus.UNINSTALLING, DuRequest.COMPLETE): "->None",
    (DuStatus.UNINSTALLING, DuRequest.FAIL): "->Installed",
}

R = EeRequest
EXPECTED_EE = {
    (EeStatus.UP, R.ENABLE): "=Up",
    (EeStatus.UP, R.DISABLE): "->Disabled",
    (EeStatus.UP, R.RESTART): "->Restarting",
    (EeStatus.UP, R.RESET): "->Restarting",
    (EeStatus.UP, R.SET_RUN_LEVEL): "->Up",
    (EeStatus.UP, R.INSTALL): "->Up",
    (EeStatus.UP, R.UPDATE): "->Up",
    (EeStatus.UP, R.UNINSTALL): "->Up",
    (EeStatus.UP, R.EU_REQUEST): "->Up",
    (EeStatus.DISABLED, R.ENABLE): "->Up",
    (EeStatus.DISABLED, R.DISABLE): "=Disabled",
    (EeStatus.DISABLED, R.RESTART): "!7230",  # "this command will fail"
    (EeStatus.DISABLED, R.RESET): "->Restarting",
    (EeStatus.DISABLED, R.SET_RUN_LEVEL): "!7012",
    (EeStatus.DISABLED, R.INSTALL): "!7012/event",
    (EeStatus.DISABLED, R.UPDATE): "!7012/event",  # "fails and the associated event will contain a FaultStruct"
    (EeStatus.DISABLED, R.UNINSTALL): "!7012/event",
    (EeStatus.DISABLED, R.EU_REQUEST): "!7012",  # "a error message MUST be generated"
    (EeStatus.RESTARTING, R.ENABLE): "=Restarting",
    (EeStatus.RESTARTING, R.DISABLE): "->Disabled",
    (EeStatus.RESTARTING, R.RESTART): "!7230",
    (EeStatus.RESTARTING, R.RESET): "!7230",
    (EeStatus.RESTARTING, R.SET_RUN_LEVEL): "!7230",
    (EeStatus.RESTARTING, R.INSTALL): "->Restarting",
    (EeStatus.RESTARTING, R.UPDATE): "->Restarting",
    (EeStatus.RESTARTING, R.UNINSTALL): "->Restarting",
    (EeStatus.RESTARTING, R.EU_REQUEST): "!7230",
    **{(EeStatus.ERROR, r): "!7007" for r in (R.ENABLE, R.DISABLE, R.RESTART, R.RESET, R.SET_RUN_LEVEL)},
    (EeStatus.ERROR, R.EU_REQUEST): "!7012",
    (EeStatus.ERROR, R.INSTALL): "!7012/event",
    (EeStatus.ERROR, R.UPDATE): "!7012/event",
    (EeStatus.ERROR, R.UNINSTALL): "->Error",
}


def spell(answer: object) -> str:
    if isinstance(answer, Refused):
        return f"!{answer.code.usp}" + ("/event" if answer.in_event else "")
    assert isinstance(answer, Next)
    state = "None" if answer.state is None else str(answer.state)
    return ("->" if answer.act else "=") + state


MACHINES = [
    ("EU", EU, EuStatus, EuRequest, EXPECTED_EU),
    ("DU", DU, DuStatus, DuRequest, EXPECTED_DU),
    ("ExecEnv", EE, EeStatus, EeRequest, EXPECTED_EE),
]


@pytest.mark.parametrize(("name", "table", "state_type", "request_type", "expected"), MACHINES, ids=lambda m: m)
def test_every_state_request_pair_has_the_standards_answer(
    name: str, table: dict, state_type: type[StrEnum], request_type: type[StrEnum], expected: dict
) -> None:
    pairs = set(itertools.product(state_type, request_type))
    assert set(table) == pairs, f"{name}: pairs without an answer: {pairs - set(table)}"
    assert set(expected) == pairs
    wrong = {pair: (spell(table[pair]), want) for pair, want in expected.items() if spell(table[pair]) != want}
    assert wrong == {}, wrong


def test_allow_raises_the_refusal_as_a_fault_naming_the_path() -> None:
    with pytest.raises(Fault) as caught:
        allow(EU, EuStatus.STOPPING, EuRequest.ACTIVE, "Device.SoftwareModules.ExecutionUnit.1.")
    assert caught.value.code is FaultCode.INVALID_EE_STATE
    assert caught.value.path == "Device.SoftwareModules.ExecutionUnit.1."
    assert allow(EU, EuStatus.IDLE, EuRequest.ACTIVE) == Next(EuStatus.STARTING)


def test_state_enums_are_the_models_enumerations() -> None:
    """The enums spell exactly what the served model's enumerations allow."""
    schema = load_schema()
    sm = "Device.SoftwareModules."
    pairs = [
        (sm + "ExecutionUnit.{i}.", "Status", states.EuStatus),
        (sm + "ExecutionUnit.{i}.", "ExecutionFaultCode", states.EuFault),
        (sm + "DeploymentUnit.{i}.", "Status", states.DuStatus),
        (sm + "ExecEnv.{i}.", "Status", states.EeStatus),
    ]
    for path, parameter, enum in pairs:
        allowed = set(schema.objects[path].parameters[parameter].type.enumerations)
        assert {e.value for e in enum} <= allowed, (path, parameter)
