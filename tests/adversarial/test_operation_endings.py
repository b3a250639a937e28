"""Item 1, the structural part: whatever is raised inside an Install, Update or Uninstall —
here an exception no code foresaw, injected with DSM_RAISE_AT — the operation ends with a
fault, its DUStateChange!, and no half-made object or file; the DU stays changeable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.endings import cleanup, ends_with
from tests.adversarial.archives import bundle_members, tar_bytes, write
from tests.integration.lcm_helpers import DU, install, operate, row, rows, top_entries, tree_files
from tests.support.daemon import DsmDaemon

INTERNAL = FaultCode.INTERNAL_ERROR.usp


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DsmDaemon]:
    dsm = DsmDaemon(tmp_path)
    try:
        yield dsm
    finally:
        dsm.cleanup()


@pytest.mark.integration
def test_an_unforeseen_exception_ends_every_operation_with_its_event_and_no_leftovers(
    daemon: DsmDaemon, tmp_path: Path
) -> None:
    url = f"file://{write(tmp_path, 'good', tar_bytes(bundle_members()))}"
    daemon.start(env={"DSM_RAISE_AT": "install.unpacked"})
    events = daemon.events("Device.SoftwareModules.")
    outcome = install(daemon, url)
    assert outcome.fault is not None and outcome.fault["code"] == INTERNAL, outcome
    event = events.du_state_change("Install", timeout=20)
    assert (event["CurrentState"], event["Fault.FaultCode"]) == ("Failed", str(INTERNAL))
    assert rows(daemon, DU) == [] and top_entries(daemon.state / "bundles") == []

    daemon.stop()
    daemon.start(env={"DSM_RAISE_AT": "update.unpacked,uninstall.journaled"})
    events = daemon.events("Device.SoftwareModules.")
    assert install(daemon, url).ok
    (du,) = rows(daemon, DU)
    bundles = tree_files(daemon.state / "bundles")
    for command, operation in (("Update()", "Update"), ("Uninstall()", "Uninstall")):
        outcome = operate(daemon, du + command, {"URL": url} if operation == "Update" else {})
        assert outcome.fault is not None and outcome.fault["code"] == INTERNAL, (command, outcome)
        event = events.du_state_change(operation, timeout=20)
        assert (event["CurrentState"], event["Fault.FaultCode"]) == ("Installed", str(INTERNAL)), event
        assert row(daemon, du)["Status"] == "Installed"  # not stuck in Updating / Uninstalling
        assert tree_files(daemon.state / "bundles") == bundles  # the new generation is gone
    daemon.stop()
    daemon.start()  # without the injection the DU can be uninstalled: nothing was left journaled
    assert operate(daemon, du + "Uninstall()").ok
    assert rows(daemon, DU) == [] and top_entries(daemon.state / "bundles") == []


@pytest.mark.unit
def test_ends_with_runs_every_cleanup_step_and_raises_a_fault() -> None:
    seen: list[str] = []

    def broken() -> None:
        raise OSError(28, "No space left on device")

    async def abandon(fault: Fault) -> None:
        await cleanup("test", broken, lambda: seen.append(fault.code.name))

    async def operation() -> None:
        async with ends_with("test", abandon):
            raise KeyError("nobody foresaw this")

    with pytest.raises(Fault) as raised:
        asyncio.run(operation())
    assert raised.value.code is FaultCode.INTERNAL_ERROR
    assert seen == ["INTERNAL_ERROR"]  # the step after the failing one still ran


@pytest.mark.unit
def test_cleanup_finishes_its_steps_when_cancelled_meanwhile() -> None:
    seen: list[str] = []

    async def slow_removal() -> None:
        await asyncio.sleep(10)

    async def operation() -> None:
        await cleanup("test", slow_removal, lambda: seen.append("event sent"))

    async def main() -> None:
        task = asyncio.create_task(operation())
        await asyncio.sleep(0.05)
        task.cancel()  # as drain() does at shutdown
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["event sent"]
