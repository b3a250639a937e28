"""The lifecycle of Device.SoftwareModules. as three state machines, one table each.

Each table answers, for every (state, request) pair, either the next state (``Next``; with
``act=False`` when the standard says the request "is ignored") or the standard's fault
(``Refused``). tests/unit/test_lcm_states.py enumerates every pair. The LCM modules ask
:func:`decide` / :func:`allow` and never compare status strings of their own.

Sources (TR-181 2.19.1, USP flavour, ../shared/bbf/tr-181-2-19-1-usp-full.xml):

* EU — ``ExecutionUnit.{i}.SetRequestedState()``: "If this instance ... is associated with an
  Execution Environment that is disabled and an attempt is made to alter this value, then a
  error message MUST be generated"; its ``RequestedState`` enumeration: Idle "If ... Starting
  or Active the device will attempt to Stop the Execution Unit; otherwise this requested state
  is ignored", Active "If ... Idle the device will attempt to Start ... If ... Stopping the
  request is rejected and a fault raised. Otherwise this requested state is ignored".
  ``Restart()``: Idle → start as if Active was requested; Stopping → "rejected and a fault
  raised"; Starting/Active → Restarting; "any other status then this command has no effect".
* DU — ``DUStateChange!.Fault.FaultCode``: "If a requested operation attempts to alter the
  State of a Deployment Unit in a manner that conflicts with the Deployment Unit State Machine
  Diagram [TR-369 Appendix I] ... 7229 (Invalid Deployment Unit State)": only an Installed DU
  accepts Update() or Uninstall(). ``CurrentState`` Failed: "The DU could not be installed in
  which case a DU instance MUST NOT be created in the Data Model" — so an install that fails
  ends with no row (``Next(None)``).
* ExecEnv — ``Enable``: disabling stops its EUs (Idle), "If an Update or Uninstall operation
  is attempted on a DeploymentUnit that is to be applied against a disabled ExecEnv, that
  operation fails and the associated event will contain a FaultStruct"; ``Restart()``: "If the
  ExecEnv is currently disabled, this command will fail and the state ... will not change";
  ``Reset()`` ends with the ExecEnv restarted (or left Disabled when so configured).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from dsm_tr181.errors import Fault, FaultCode


class DuStatus(StrEnum):
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    UPDATING = "Updating"
    UNINSTALLING = "Uninstalling"


class DuRequest(StrEnum):
    UPDATE = "Update"
    UNINSTALL = "Uninstall"
    COMPLETE = "Complete"  # the operation under way succeeded
    FAIL = "Fail"  # the operation under way failed (or was rolled back)


class DuOutcome(StrEnum):
    """DUStateChange!.CurrentState."""

    INSTALLED = "Installed"
    UNINSTALLED = "Uninstalled"
    FAILED = "Failed"


class Operation(StrEnum):
    """DUStateChange!.OperationPerformed; lower-cased it is the journal's OperationRecord.kind."""

    INSTALL = "Install"
    UPDATE = "Update"
    UNINSTALL = "Uninstall"

    @property
    def kind(self) -> str:
        return self.value.lower()


class EuStatus(StrEnum):
    IDLE = "Idle"
    STARTING = "Starting"
    ACTIVE = "Active"
    STOPPING = "Stopping"
    RESTARTING = "Restarting"


class EuRequest(StrEnum):
    ACTIVE = "Active"  # SetRequestedState(Active) / RequestedState := Active
    IDLE = "Idle"  # SetRequestedState(Idle)
    RESTART = "Restart"  # Restart()


class EuFault(StrEnum):
    """ExecutionUnit.{i}.ExecutionFaultCode."""

    NO_FAULT = "NoFault"
    FAILURE_ON_START = "FailureOnStart"
    FAILURE_ON_AUTO_START = "FailureOnAutoStart"
    FAILURE_ON_STOP = "FailureOnStop"
    FAILURE_WHILE_ACTIVE = "FailureWhileActive"
    DEPENDENCY_FAILURE = "DependencyFailure"
    UNSTARTABLE = "UnStartable"


class EeStatus(StrEnum):
    UP = "Up"
    ERROR = "Error"  # here: no longer configured, kept so that its DUs can be uninstalled
    DISABLED = "Disabled"
    RESTARTING = "Restarting"


class EeRequest(StrEnum):
    ENABLE = "Enable"
    DISABLE = "Disable"
    RESTART = "Restart"
    RESET = "Reset"
    SET_RUN_LEVEL = "SetRunLevel"
    INSTALL = "InstallDU"  # a DU installed into it
    UPDATE = "Update"  # one of its DUs updated
    UNINSTALL = "Uninstall"  # one of its DUs uninstalled
    EU_REQUEST = "EURequest"  # SetRequestedState()/Restart() of one of its EUs


S = TypeVar("S")


@dataclass(frozen=True)
class Next(Generic[S]):
    """Accepted: the machine goes to ``state``; ``act`` False = the standard says "ignored"."""

    state: S
    act: bool = True


@dataclass(frozen=True)
class Refused:
    """Refused with the standard's fault.

    ``in_event``: the refusal is reported as the operation's outcome (DUStateChange! with a
    fault and a failed OperationComplete), not as an Operate error (see README "Outcomes")."""

    code: FaultCode
    reason: str
    in_event: bool = False

    def fault(self, path: str = "") -> Fault:
        return Fault(self.code, self.reason, path)


Answer = Next[S] | Refused

_IN_PROGRESS = Refused(FaultCode.INVALID_DU_STATE, "an operation on this deployment unit is under way")
_NOTHING = Refused(FaultCode.INTERNAL_ERROR, "no operation on this deployment unit is under way")

DU: dict[tuple[DuStatus, DuRequest], Answer[DuStatus | None]] = {
    (DuStatus.INSTALLING, DuRequest.UPDATE): _IN_PROGRESS,
    (DuStatus.INSTALLING, DuRequest.UNINSTALL): _IN_PROGRESS,
    (DuStatus.INSTALLING, DuRequest.COMPLETE): Next(DuStatus.INSTALLED),
    (DuStatus.INSTALLING, DuRequest.FAIL): Next(None),  # "a DU instance MUST NOT be created"
    (DuStatus.INSTALLED, DuRequest.UPDATE): Next(DuStatus.UPDATING),
    (DuStatus.INSTALLED, DuRequest.UNINSTALL): Next(DuStatus.UNINSTALLING),
    (DuStatus.INSTALLED, DuRequest.COMPLETE): _NOTHING,
    (DuStatus.INSTALLED, DuRequest.FAIL): _NOTHING,
    (DuStatus.UPDATING, DuRequest.UPDATE): _IN_PROGRESS,
    (DuStatus.UPDATING, DuRequest.UNINSTALL): _IN_PROGRESS,
    (DuStatus.UPDATING, DuRequest.COMPLETE): Next(DuStatus.INSTALLED),
    (DuStatus.UPDATING, DuRequest.FAIL): Next(DuStatus.INSTALLED),  # the old version stays
    (DuStatus.UNINSTALLING, DuRequest.UPDATE): _IN_PROGRESS,
    (DuStatus.UNINSTALLING, DuRequest.UNINSTALL): _IN_PROGRESS,
    (DuStatus.UNINSTALLING, DuRequest.COMPLETE): Next(None),  # Uninstalled: the row goes
    (DuStatus.UNINSTALLING, DuRequest.FAIL): Next(DuStatus.INSTALLED),
}

_STOPPING = Refused(FaultCode.INVALID_EE_STATE, "the execution unit is stopping")

EU: dict[tuple[EuStatus, EuRequest], Answer[EuStatus]] = {
    (EuStatus.IDLE, EuRequest.ACTIVE): Next(EuStatus.STARTING),
    (EuStatus.IDLE, EuRequest.IDLE): Next(EuStatus.IDLE, act=False),
    (EuStatus.IDLE, EuRequest.RESTART): Next(EuStatus.STARTING),
    (EuStatus.STARTING, EuRequest.ACTIVE): Next(EuStatus.STARTING, act=False),
    (EuStatus.STARTING, EuRequest.IDLE): Next(EuStatus.STOPPING),
    (EuStatus.STARTING, EuRequest.RESTART): Next(EuStatus.RESTARTING),
    (EuStatus.ACTIVE, EuRequest.ACTIVE): Next(EuStatus.ACTIVE, act=False),
    (EuStatus.ACTIVE, EuRequest.IDLE): Next(EuStatus.STOPPING),
    (EuStatus.ACTIVE, EuRequest.RESTART): Next(EuStatus.RESTARTING),
    (EuStatus.STOPPING, EuRequest.ACTIVE): _STOPPING,
    (EuStatus.STOPPING, EuRequest.IDLE): Next(EuStatus.STOPPING, act=False),
    (EuStatus.STOPPING, EuRequest.RESTART): _STOPPING,
    (EuStatus.RESTARTING, EuRequest.ACTIVE): Next(EuStatus.RESTARTING, act=False),
    (EuStatus.RESTARTING, EuRequest.IDLE): Next(EuStatus.STOPPING),
    (EuStatus.RESTARTING, EuRequest.RESTART): Next(EuStatus.RESTARTING, act=False),
}

_GONE = Refused(FaultCode.INVALID_CONFIGURATION, "this execution environment is no longer configured")
_DISABLED = Refused(FaultCode.INVALID_VALUE, "the execution environment is disabled")
_DISABLED_OPERATION = Refused(FaultCode.DISABLED_EE, "the execution environment is disabled", in_event=True)
_RESTART_DISABLED = Refused(FaultCode.INVALID_EE_STATE, "a disabled execution environment cannot restart")
_RESTARTING = Refused(FaultCode.INVALID_EE_STATE, "the execution environment is restarting")

EE: dict[tuple[EeStatus, EeRequest], Answer[EeStatus]] = {
    (EeStatus.UP, EeRequest.ENABLE): Next(EeStatus.UP, act=False),
    (EeStatus.UP, EeRequest.DISABLE): Next(EeStatus.DISABLED),
    (EeStatus.UP, EeRequest.RESTART): Next(EeStatus.RESTARTING),
    (EeStatus.UP, EeRequest.RESET): Next(EeStatus.RESTARTING),
    (EeStatus.UP, EeRequest.SET_RUN_LEVEL): Next(EeStatus.UP),
    (EeStatus.UP, EeRequest.INSTALL): Next(EeStatus.UP),
    (EeStatus.UP, EeRequest.UPDATE): Next(EeStatus.UP),
    (EeStatus.UP, EeRequest.UNINSTALL): Next(EeStatus.UP),
    (EeStatus.UP, EeRequest.EU_REQUEST): Next(EeStatus.UP),
    (EeStatus.DISABLED, EeRequest.ENABLE): Next(EeStatus.UP),
    (EeStatus.DISABLED, EeRequest.DISABLE): Next(EeStatus.DISABLED, act=False),
    (EeStatus.DISABLED, EeRequest.RESTART): _RESTART_DISABLED,
    # Reset() restores the configuration: Up (restarted) or Disabled, whichever is configured.
    (EeStatus.DISABLED, EeRequest.RESET): Next(EeStatus.RESTARTING),
    (EeStatus.DISABLED, EeRequest.SET_RUN_LEVEL): _DISABLED,
    (EeStatus.DISABLED, EeRequest.INSTALL): _DISABLED_OPERATION,
    (EeStatus.DISABLED, EeRequest.UPDATE): _DISABLED_OPERATION,
    (EeStatus.DISABLED, EeRequest.UNINSTALL): _DISABLED_OPERATION,
    (EeStatus.DISABLED, EeRequest.EU_REQUEST): _DISABLED,
    # Restarting: its EUs are being stopped; it comes back Up by itself.
    (EeStatus.RESTARTING, EeRequest.ENABLE): Next(EeStatus.RESTARTING, act=False),
    (EeStatus.RESTARTING, EeRequest.DISABLE): Next(EeStatus.DISABLED),
    (EeStatus.RESTARTING, EeRequest.RESTART): _RESTARTING,
    (EeStatus.RESTARTING, EeRequest.RESET): _RESTARTING,
    (EeStatus.RESTARTING, EeRequest.SET_RUN_LEVEL): _RESTARTING,
    (EeStatus.RESTARTING, EeRequest.INSTALL): Next(EeStatus.RESTARTING),
    (EeStatus.RESTARTING, EeRequest.UPDATE): Next(EeStatus.RESTARTING),
    (EeStatus.RESTARTING, EeRequest.UNINSTALL): Next(EeStatus.RESTARTING),
    (EeStatus.RESTARTING, EeRequest.EU_REQUEST): _RESTARTING,
    # Error (gone from the configuration): its DUs can be seen and uninstalled, nothing else.
    (EeStatus.ERROR, EeRequest.ENABLE): _GONE,
    (EeStatus.ERROR, EeRequest.DISABLE): _GONE,
    (EeStatus.ERROR, EeRequest.RESTART): _GONE,
    (EeStatus.ERROR, EeRequest.RESET): _GONE,
    (EeStatus.ERROR, EeRequest.SET_RUN_LEVEL): _GONE,
    (EeStatus.ERROR, EeRequest.INSTALL): Refused(FaultCode.DISABLED_EE, _GONE.reason, in_event=True),
    (EeStatus.ERROR, EeRequest.UPDATE): Refused(FaultCode.DISABLED_EE, _GONE.reason, in_event=True),
    (EeStatus.ERROR, EeRequest.UNINSTALL): Next(EeStatus.ERROR),
    (EeStatus.ERROR, EeRequest.EU_REQUEST): Refused(FaultCode.INVALID_VALUE, _GONE.reason),
}

R = TypeVar("R")


def decide(table: dict[tuple[S, R], Answer[S]], state: S, request: R) -> Answer[S]:
    return table[(state, request)]


def allow(table: dict[tuple[S, R], Answer[S]], state: S, request: R, path: str = "") -> Next[S]:
    """The table's answer, raising its fault when the request is refused."""
    answer = table[(state, request)]
    if isinstance(answer, Refused):
        raise answer.fault(path)
    return answer
