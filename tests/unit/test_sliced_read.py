"""A large get made in slices on the loop: the same answer, turns for other work, one state."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dsm_tr181.buses.bulk_json import BulkEncoder
from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.sliced_read import SLICE, read_copy, read_json
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.flavours import Flavour
from dsm_tr181.tree.datamodel import DataModel
from tests.support.trees import many_dus

pytestmark = pytest.mark.unit

SM = "Device.SoftwareModules."
DUS = 300  # 600 rows and their sub-objects: several slices


@pytest.fixture(scope="module")
def dm() -> DataModel:
    return many_dus(DUS)


def read(dm: DataModel, paths: list[str], flat: bool, limit: int = 10**6) -> Any:
    pieces, _ = asyncio.run(read_json(dm, paths, 0, BulkEncoder(flat=flat), limit))
    return json.loads(b"".join(pieces))


def test_the_flat_answer_is_every_value_as_text(dm: DataModel) -> None:
    values = dm.get_values(["Device."])
    assert read(dm, ["Device."], flat=True) == {path: dm.text(path, value) for path, value in values.items()}


def test_the_object_answer_holds_every_object_once(dm: DataModel) -> None:
    answer = read(dm, ["Device.", f"{SM}ExecutionUnit.*.Status", f"{SM}DeploymentUnit.2.Name"], flat=False)
    objects = [obj for result in dm.get(["Device."]) for obj in result.resolved]
    assert list(answer) == [obj.path for obj in objects]
    assert answer[f"{SM}ExecutionUnit.7."]["Name"] == 'app "6" ☃'


def test_parameters_in_another_order_are_merged(dm: DataModel) -> None:
    paths = [f"{SM}ExecutionUnit.*.Status", f"{SM}ExecutionUnit.*.Name"]
    assert read(dm, paths, flat=False)[f"{SM}ExecutionUnit.4."] == {"Status": "", "Name": 'app "3" ☃'}
    assert read(dm, paths, flat=True)[f"{SM}ExecutionUnit.4.Name"] == 'app "3" ☃'


def test_a_failing_path_and_a_result_too_large_raise_their_fault(dm: DataModel) -> None:
    with pytest.raises(Fault) as failed:
        read(dm, [f"{SM}DeploymentUnit.1.", f"{SM}Nothing."], flat=True)
    assert failed.value.code is FaultCode.INVALID_PATH
    with pytest.raises(Fault) as large:
        read(dm, ["Device."], flat=True, limit=1000)
    assert large.value.code is FaultCode.RESOURCES_EXCEEDED


def alongside(dm: DataModel, work: Callable[[], Awaitable[None]]) -> tuple[Any, int]:
    """The whole tree read while ``work`` runs once per turn of the loop; the answer and the turns."""

    async def main() -> tuple[Any, int]:
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                await work()
                turns += 1

        task = asyncio.ensure_future(other())
        pieces, _ = await read_json(dm, ["Device."], 0, BulkEncoder(), 10**6)
        task.cancel()
        return json.loads(b"".join(pieces)), turns

    return asyncio.run(main())


def test_other_work_runs_between_slices(dm: DataModel) -> None:
    """The loop is not held for the whole read: other tasks get a turn every SLICE objects."""

    async def idle() -> None:
        await asyncio.sleep(0)

    answer, turns = alongside(dm, idle)
    assert turns >= len(answer) // SLICE


def test_a_read_sees_one_state_of_a_tree_changing_meanwhile(dm: DataModel) -> None:
    """A writer changes the first and the last DU together at every turn: every answer shows
    them equal (the read is taken again when the tree moved), and the read still ends."""
    first, last = f"{SM}DeploymentUnit.1.", f"{SM}DeploymentUnit.{DUS}."
    count = 0

    async def write() -> None:
        nonlocal count
        count += 1
        for du in (first, last):
            dm.update(du, {"Version": str(count)})
        await asyncio.sleep(0)

    answer, turns = alongside(dm, write)
    assert turns > 1 and answer[first]["Version"] == answer[last]["Version"] != ""


def test_a_bus_thread_runs_a_read_in_slices_through_the_bridge(dm: DataModel) -> None:
    """D-Bus's Get and GetBulk reach the loop as coroutines (LoopBridge.call_async): the loop
    keeps its turns while the bus thread waits for the copy, and a fault comes back raised."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        bridge = LoopBridge(loop, timeout=60)
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        ticker = asyncio.run_coroutine_threadsafe(other(), loop)
        copy = bridge.call_async(read_copy, dm, ["Device."], 0)
        ticker.cancel()
        assert len(copy.paths) == len(dm.get(["Device."])[0].resolved)
        assert turns >= len(copy.paths) // SLICE
        with pytest.raises(Fault) as failed:
            bridge.call_async(read_copy, dm, [f"{SM}Nothing."], 0)
        assert failed.value.code is FaultCode.INVALID_PATH
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_flavoured_view_reads_what_it_serves_and_sees_the_trees_changes(dm: DataModel) -> None:
    """A front end serving one flavour reads through dm.view(): the sliced read leaves out what
    the flavour lacks, and a change made through the tree itself still restarts the read."""
    view = dm.view(Flavour.CWMP)
    values = view.get_values(["Device."])
    assert len(values) < len(dm.get_values(["Device."]))
    assert read(view, ["Device."], flat=True) == {path: view.text(path, value) for path, value in values.items()}
    generation = view.generation
    dm.update(f"{SM}DeploymentUnit.1.", {"Version": "changed through the tree"})
    assert view.generation != generation
