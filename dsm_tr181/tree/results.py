"""What the operations API returns, shaped after the USP responses (TR-369 §7)."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dsm_tr181.errors import Fault
from dsm_tr181.schema.model import Object
from dsm_tr181.schema.types import Value


@dataclass(slots=True)
class ResolvedObject:
    """One object instance of a Get answer with the requested parameters (relative names)."""

    path: str
    schema: Object
    params: Mapping[str, Value]  # read-only; valid until the tree next changes

    def text(self) -> dict[str, str]:
        """Parameter values in their TR-106 string encoding."""
        types = self.schema.parameters
        return {name: types[name].type.format(value) for name, value in self.params.items()}


@dataclass
class GetPathResult:
    requested_path: str
    resolved: list[ResolvedObject] = field(default_factory=list)
    fault: Fault | None = None


@dataclass
class ParamError:
    path: str
    fault: Fault


def combined_fault(errors: list[ParamError]) -> Fault:
    """One fault for a refused multi-parameter request: the first error's, with every
    parameter's fault in ``details``."""
    first = errors[0].fault
    fault = Fault(first.code, first.message, first.path)
    fault.details = [error.fault for error in errors]
    return fault


@dataclass
class UpdatedObject:
    path: str
    params: dict[str, Value]


@dataclass
class SetResult:
    updated: list[UpdatedObject] = field(default_factory=list)
    errors: list[ParamError] = field(default_factory=list)


@dataclass
class AddResult:
    requested_path: str
    path: str = ""  # instantiated path of the new row
    unique_keys: dict[str, Value] = field(default_factory=dict)
    errors: list[ParamError] = field(default_factory=list)
    fault: Fault | None = None


@dataclass
class DeleteResult:
    requested_path: str
    deleted: list[str] = field(default_factory=list)
    fault: Fault | None = None


@dataclass
class InstanceResult:
    path: str
    unique_keys: dict[str, Value]


class RequestState(enum.Enum):
    ACTIVE = "Active"
    COMPLETED = "Completed"
    FAILED = "Failed"


@dataclass
class Request:
    """An asynchronous command in progress (what USP keeps in Device.LocalAgent.Request.{i})."""

    id: str
    command: str  # executed command path
    command_key: str
    future: asyncio.Future[dict[str, Value]]
    state: RequestState = RequestState.ACTIVE


@dataclass
class OperateResult:
    command: str  # executed command path, instance numbers resolved
    outputs: dict[str, Value] | None = None  # synchronous command that succeeded
    request: Request | None = None  # asynchronous command accepted
    fault: Fault | None = None
