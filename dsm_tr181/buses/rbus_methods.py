"""rbus methods: data-model commands, synchronous and asynchronous.

A method call is handed to the loop, which runs ``DataModel.operate``. A synchronous
command answers at once with its outputs. An asynchronous one (InstallDU(), Update(),
Uninstall(), ExecEnv Restart()...) is answered when its request completes: the loop's
OperationComplete notification posts the rbus asynchronous response behind the row
and event changes the command made (see rbus_outbox).

RDK's USP agent (usp-pa-vendor-rdk, lcm_rbus_datamodel.c) adds an INT32 input
``uspasynchandle`` to the asynchronous commands it forwards and completes the USP
operation only when it finds that value in the answer: it is taken out of the inputs
and echoed in every answer, success or failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.rbus_ffi import MethodReply, Typed
from dsm_tr181.buses.rbus_values import typed
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.types import Value
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Notification
from dsm_tr181.tree.paths import schema_path

log = logging.getLogger(__name__)

ASYNC_HANDLE: Final = "uspasynchandle"


@dataclass(frozen=True, slots=True)
class _Waiting:
    reply: MethodReply
    echo: Mapping[str, Typed]


class Methods:
    def __init__(self, dm: DataModel, bridge: LoopBridge, post: Callable[[Callable[[], None]], None]) -> None:
        self._dm = dm
        self._bridge = bridge
        self._post = post  # runs an answer after what was posted before it
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}  # request id -> its caller, until answered
        self._closed = False

    def call(self, name: str, inputs: dict[str, Any], reply: MethodReply) -> None:
        """The rbus method handler (on a bus thread)."""
        echo = _echo(inputs.pop(ASYNC_HANDLE)) if ASYNC_HANDLE in inputs else {}
        try:
            outputs = self._bridge.call(self._operate, name, _flatten(inputs), reply, echo)
        except Exception as exc:
            if not isinstance(exc, Fault):
                log.error("rbus method %s failed", name, exc_info=exc)
            reply.fail(exc, echo)
            return
        if outputs is not None:
            reply.succeed({**outputs, **echo})

    def completed(self, note: Notification) -> None:
        """An OperationComplete notification (on the loop): post the answer to its caller."""
        with self._lock:
            if note.request_id not in self._waiting:
                return
        outputs = None if note.fault is not None else self._typed_outputs(note.path, note.args)
        self._post(lambda: self._answer(note.request_id, outputs, note.fault))

    def close(self) -> None:
        """Answer every caller still waiting (on the loop): no answer can follow the close."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        for request_id, entry in waiting.items():
            fault = Fault(FaultCode.INTERNAL_ERROR, f"the rbus provider closed while request {request_id} ran")
            entry.reply.fail(fault, entry.echo)

    def _operate(
        self, name: str, args: dict[str, Any], reply: MethodReply, echo: Mapping[str, Typed]
    ) -> dict[str, Typed] | None:
        """On the loop: outputs of a synchronous command, None for an asynchronous one."""
        if self._closed:
            raise Fault(FaultCode.INTERNAL_ERROR, "the rbus provider is closing")
        result = self._dm.operate_one(name, args)
        if result.request is not None:
            with self._lock:
                self._waiting[result.request.id] = _Waiting(reply, echo)
            return None
        return self._typed_outputs(result.command, result.outputs or {})

    def _answer(self, request_id: str, outputs: dict[str, Typed] | None, fault: Fault | None) -> None:
        with self._lock:
            waiting = self._waiting.pop(request_id, None)
        if waiting is None:  # closed meanwhile: already answered
            return
        if fault is not None:
            waiting.reply.fail(fault, waiting.echo)
        else:
            waiting.reply.succeed({**(outputs or {}), **waiting.echo})

    def _typed_outputs(self, command_path: str, outputs: Mapping[str, Value]) -> dict[str, Typed]:
        command = self._dm.schema.command(schema_path(command_path))
        assert command is not None
        return {name: typed(command.outputs[schema_path(name)].type, value) for name, value in outputs.items()}


def _echo(value: Any) -> dict[str, Typed]:
    return {ASYNC_HANDLE: (value, "int") if type(value) is int else (str(value), "string")}


def _flatten(inputs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested rbus objects as TR-181 argument names: {"AutoRestart": {"Enable": True}} ->
    {"AutoRestart.Enable": True}."""
    flat: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat
