"""A get's JSON answer, read and encoded on the loop in slices, from one state of the tree.

A whole-tree read at 1000 DUs is tens of milliseconds of work (walk, copy, encode). Made
in one piece on the loop it delays every other client by as much; on another thread it
holds the GIL the loop needs for as long, in 5 ms turns. Here it runs ``SLICE`` objects at
a time, with a turn of the loop between slices (a small request waits one slice, ~1-2 ms).

One state: the copy is taken in slices while the tree may change between them. The tree's
``generation`` moves with every change a get could see; a copy during which it moved is
thrown away and taken again, and the last attempt is taken in one piece (a tree changing
without pause still gets an answer). The encoding works on the copy only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from itertools import islice

from dsm_tr181.buses.bulk_json import BulkEncoder, Snapshot, collections_paused, snapshot, unique
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.datamodel import DataModel

SLICE = 128  # objects walked, copied or encoded between two turns of the loop
ATTEMPTS = 3  # copies tried in slices before one in a single piece


async def read_json(
    dm: DataModel, paths: Sequence[str], max_depth: int, encoder: BulkEncoder, limit: int | None = None
) -> tuple[list[bytes], int]:
    """The JSON document of a get of ``paths`` (see :class:`BulkEncoder`), in pieces, and the
    tree's generation its values were copied at; a failing path raises its fault, a result
    over ``limit`` values RESOURCES_EXCEEDED."""
    copy = unique(await read_copy(dm, paths, max_depth, limit))
    generation = dm.generation  # read_copy came back without a turn of the loop: as copied
    members: list[bytes] = []
    for part in _parts(copy):
        if members and part.paths:
            await asyncio.sleep(0)
        with collections_paused():  # its short-lived tuples would set off collections of the heap
            encoded = encoder.members(part)
        if members and encoded:
            members[-1] += b","
        members += encoded
    return ([b"{", *members, b"}"] if members else [b"{}"]), generation


async def read_copy(dm: DataModel, paths: Sequence[str], max_depth: int, limit: int | None = None) -> Snapshot:
    """A copy of the values of a get of ``paths``, taken in slices from one state of the tree."""
    for _ in range(ATTEMPTS - 1):
        copy = await _copy(dm, paths, max_depth, limit, sliced=True)
        if copy is not None:
            return copy
    copy = await _copy(dm, paths, max_depth, limit, sliced=False)
    assert copy is not None  # taken in one piece, it cannot have seen the tree change
    return copy


async def _copy(
    dm: DataModel, paths: Sequence[str], max_depth: int, limit: int | None, sliced: bool
) -> Snapshot | None:
    """A copy of the values, or None if the tree changed while it was taken in slices."""
    generation = dm.generation
    walk = dm.iter_get(paths, max_depth)
    total = Snapshot([], [], [], [], [])
    while True:
        with collections_paused():
            copy = snapshot(list(islice(walk, SLICE if sliced else None)))
        total.paths.extend(copy.paths)
        total.schemas.extend(copy.schemas)
        total.sizes.extend(copy.sizes)
        total.names.extend(copy.names)
        total.values.extend(copy.values)
        if limit is not None and len(total.values) > limit:
            raise Fault(FaultCode.RESOURCES_EXCEEDED, f"the result exceeds {limit} values: ask for less")
        if not sliced or len(copy.paths) < SLICE:
            return total
        await asyncio.sleep(0)
        if dm.generation != generation:
            return None  # the walk must not go on over a changed tree


def _parts(copy: Snapshot) -> Iterator[Snapshot]:
    """``copy`` in parts of ``SLICE`` objects."""
    end = 0
    for first in range(0, len(copy.paths), SLICE):
        last = first + SLICE
        sizes = copy.sizes[first:last]
        start, end = end, end + sum(sizes)
        yield Snapshot(copy.paths[first:last], copy.schemas[first:last], sizes, copy.names[start:end],
                       copy.values[start:end])  # fmt: skip
