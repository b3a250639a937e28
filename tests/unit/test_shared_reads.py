"""Identical gets share one answer, never one older than the request or than ``reuse``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from dsm_tr181.buses.bulk_json import BulkEncoder
from dsm_tr181.buses.memory import LARGE
from dsm_tr181.buses.shared_reads import SharedReads
from dsm_tr181.buses.sliced_read import read_json
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.datamodel import DataModel
from tests.support.trees import many_dus

pytestmark = pytest.mark.unit

SM = "Device.SoftwareModules."
DUS = 300  # a whole-tree answer over memory.LARGE
FIRST = f"{SM}DeploymentUnit.1.Version"
ENCODER = BulkEncoder(flat=True)
Produce = Callable[[], Awaitable[tuple[list[bytes], int]]]


@pytest.fixture
def dm() -> DataModel:
    return many_dus(DUS)


class Reads:
    """Whole-tree reads through one SharedReads, counting the reads really made."""

    def __init__(self, dm: DataModel, reuse: float = 0.0, paths: tuple[str, ...] = ("Device.",)) -> None:
        self.dm, self.paths = dm, list(paths)
        self.made = 0
        self.drops = 0
        self.gate: asyncio.Event | None = None  # set: a read made waits for it once encoded
        self.encoded = asyncio.Event()
        self.shared = SharedReads(dm, reuse, self._dropped)

    def _dropped(self) -> None:
        self.drops += 1

    async def produce(self) -> tuple[list[bytes], int]:
        self.made += 1
        answer = await read_json(self.dm, self.paths, 0, ENCODER)
        self.encoded.set()
        if self.gate is not None:
            await self.gate.wait()
        return answer

    async def get(self) -> dict[str, str]:
        pieces = await self.shared.read(self.paths, 0, ENCODER, self.produce)
        answer: dict[str, str] = json.loads(b"".join(pieces))
        return answer


def test_gets_at_the_same_time_share_one_read(dm: DataModel) -> None:
    reads = Reads(dm)

    async def main() -> list[dict[str, str]]:
        return list(await asyncio.gather(*(reads.get() for _ in range(3))))

    first, second, third = asyncio.run(main())
    assert reads.made == 1
    assert first == second == third and first[FIRST] == ""


def test_a_get_arriving_after_a_change_does_not_take_an_answer_copied_before_it(dm: DataModel) -> None:
    """The first read has copied the tree and is still encoding when the tree changes and the
    second get arrives: that get makes its own read and sees the change."""

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        reads.gate = asyncio.Event()
        early = asyncio.ensure_future(reads.get())
        await reads.encoded.wait()
        dm.update(f"{SM}DeploymentUnit.1.", {"Version": "2.0"})
        late = asyncio.ensure_future(reads.get())
        await asyncio.sleep(0)
        reads.gate.set()
        return await early, await late

    reads = Reads(dm)
    early, late = asyncio.run(main())
    assert reads.made == 2
    assert early[FIRST] == "" and late[FIRST] == "2.0"


def test_a_large_answer_is_kept_for_reuse_seconds_while_nothing_changes(dm: DataModel) -> None:
    reads = Reads(dm, reuse=1.0)  # long enough for a loaded machine between the first two gets

    async def main() -> None:
        first = await reads.get()
        assert await reads.get() == first and reads.made == 1  # kept
        assert len(json.dumps(first)) >= LARGE
        dm.update(f"{SM}DeploymentUnit.1.", {"Version": "2.0"})
        changed = await reads.get()
        assert reads.made == 2 and changed[FIRST] == "2.0"  # the tree moved: read again
        await asyncio.sleep(1.1)
        assert reads.drops == 1 and not reads.shared._kept  # dropped when its time was up
        assert await reads.get() == changed and reads.made == 3  # read again, not kept

    asyncio.run(main())


def test_nothing_is_kept_with_reuse_0_nor_a_small_answer(dm: DataModel) -> None:
    async def twice(reads: Reads) -> int:
        await reads.get()
        await reads.get()
        return reads.made

    assert asyncio.run(twice(Reads(dm, reuse=0.0))) == 2
    assert asyncio.run(twice(Reads(dm, reuse=10.0, paths=(f"{SM}ExecEnv.",)))) == 2


def test_parameter_paths_are_always_read_anew(dm: DataModel) -> None:
    """A parameter path reads one value: computed ones (Uptime ...) are never shared."""
    reads = Reads(dm, reuse=10.0, paths=(FIRST,))

    async def main() -> None:
        await asyncio.gather(reads.get(), reads.get())

    asyncio.run(main())
    assert reads.made == 2


def test_a_fault_reaches_every_get_and_a_get_that_leaves_ends_no_other(dm: DataModel) -> None:
    async def main() -> None:
        failing = Reads(dm, paths=(f"{SM}Nothing.",))
        results = await asyncio.gather(failing.get(), failing.get(), return_exceptions=True)
        assert failing.made == 1
        assert all(isinstance(r, Fault) and r.code is FaultCode.INVALID_PATH for r in results)

        reads = Reads(dm)
        reads.gate = asyncio.Event()
        leaving, staying = asyncio.ensure_future(reads.get()), asyncio.ensure_future(reads.get())
        await reads.encoded.wait()
        leaving.cancel()  # its client hung up
        reads.gate.set()
        assert (await staying)[FIRST] == "" and reads.made == 1
        assert leaving.cancelled()

    asyncio.run(main())
