"""The rbus watchdog's rule, with a fake handle: slow is not forgotten (issue: a long
whole-tree read made the watchdog re-register while librbus still used the handle)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dsm_tr181.buses import rbus as rbus_provider
from dsm_tr181.buses.rbus import RbusProvider
from dsm_tr181.buses.rbus_ffi import HandlerActivity as Activity
from dsm_tr181.buses.rbus_ffi import RbusCallFailed, RbusError
from dsm_tr181.buses.rbus_watchdog import Verdict, after_probe, before_probe
from dsm_tr181.schema import load_schema
from dsm_tr181.schema.model import Schema
from dsm_tr181.tree.datamodel import DataModel

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def test_the_rule() -> None:
    assert before_probe(quiet_for=0.0, interval=10) is Verdict.ALIVE  # a handler runs now
    assert before_probe(quiet_for=4.9, interval=10) is Verdict.ALIVE  # one ran lately
    assert before_probe(quiet_for=5.0, interval=10) is Verdict.PROBE
    assert after_probe(None) is Verdict.ALIVE
    for code in (RbusError.TIMEOUT, RbusError.BUS_ERROR, RbusError.DESTINATION_RESPONSE_FAILURE):
        assert after_probe(code) is Verdict.BUSY
    for code in (RbusError.DESTINATION_NOT_FOUND, RbusError.ELEMENT_DOES_NOT_EXIST):
        assert after_probe(code) is Verdict.FORGOTTEN


def test_activity_counts_handlers_from_any_thread() -> None:
    activity = Activity()
    activity.enter()
    assert activity.quiet_for() == 0.0
    worker = threading.Thread(target=activity.leave)
    worker.start()
    worker.join()
    time.sleep(0.05)
    assert activity.quiet_for() >= 0.05


class ProbeHandle:
    """rbus_get of our own property fails with ``code`` (None: succeeds)."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        self.probes = 0

    def get(self, name: str) -> Any:
        self.probes += 1
        if self.code is not None:
            raise RbusCallFailed("rbus_get", self.code)
        return "value"


def run_watchdog(schema: Schema, code: int | None, busy_handler: bool) -> tuple[int, int]:
    """Run the real watchdog loop a few rounds; (probes, re-registrations)."""
    reopened: list[int] = []

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        provider = RbusProvider.create(DataModel(schema), {"watchdog_interval": 0.2}, loop)
        handle, activity = ProbeHandle(code), Activity()
        if busy_handler:
            activity.enter()  # a consumer's long read is inside one of our handlers
        provider._connection = rbus_provider._Connection(handle, activity, None, None, None)  # type: ignore[arg-type]
        provider._probe = "Device.SoftwareModules.ExecEnvNumberOfEntries"

        async def close_connection() -> None:
            provider._connection = None

        async def open_again() -> None:
            reopened.append(1)
            provider._connection = rbus_provider._Connection(ProbeHandle(None), Activity(), None, None, None)  # type: ignore[arg-type]

        provider._close_connection = close_connection  # type: ignore[method-assign]
        provider._open = open_again  # type: ignore[method-assign]
        task = loop.create_task(provider._watch())
        await asyncio.sleep(1.2 if not busy_handler else 2.5)
        task.cancel()
        return handle.probes, len(reopened)

    return asyncio.run(scenario())


def test_a_timeout_is_busy_not_forgotten(schema: Schema) -> None:
    probes, reopened = run_watchdog(schema, RbusError.TIMEOUT, busy_handler=False)
    assert probes >= 2 and reopened == 0


def test_forgotten_registers_again_once(schema: Schema) -> None:
    probes, reopened = run_watchdog(schema, RbusError.DESTINATION_NOT_FOUND, busy_handler=False)
    assert probes >= 1 and reopened == 1


def test_never_while_a_handler_runs(schema: Schema) -> None:
    """A handler in flight both proves the broker routes to us and forbids closing."""
    probes, reopened = run_watchdog(schema, RbusError.DESTINATION_NOT_FOUND, busy_handler=True)
    assert probes == 0 and reopened == 0
