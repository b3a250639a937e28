"""Get's ``a{sv}`` reply of many objects, serialised column by column.

:func:`~dsm_tr181.buses.dbus_variants.dictionary` runs some Python byte code per value
(~3 µs): a partial-path Get of 1000 DUs (~1.6·10^5 values) took 0.5 s of it, on the loop.
Here, as in :mod:`~dsm_tr181.buses.dbus_bulk`, the objects of one schema are encoded
together and each parameter's values go through C functions only (``map`` over bound
methods, ``struct`` packers, ``itertools.accumulate`` for the entry offsets); Python runs
per object, not per value. The bytes are GLib's own (the tests compare them).

An entry of ``a{sv}`` is ``key NUL, padding to 8, value, NUL, signature, key length``:
it starts 8-aligned, so what it holds depends on nothing before it; the array's framing
offsets (entry ends) are sums over the entries' lengths.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import accumulate, repeat
from operator import add, and_, methodcaller, neg
from typing import Any

from dsm_tr181.buses.bulk_json import Snapshot
from dsm_tr181.buses.dbus_variants import (
    _PAD,
    _from_bytes,
    _offset_size,
    _pack_offsets,
    _string,
    signature,
    variant_encoder,
)
from dsm_tr181.gi_repository import GLib
from dsm_tr181.schema.model import Object
from dsm_tr181.schema.types import BaseType, DataType, Value, format_datetime

_NATIVE = "="  # struct: native byte order, no alignment
_BYTE = tuple(bytes((i,)) for i in range(256))
_BLOCK = 8192  # entries of the array made in one step (see _array)
_ENCODE = methodcaller("encode", "utf-8", "replace")
_PACKERS = {
    BaseType.INT: struct.Struct(_NATIVE + "i").pack,
    BaseType.UNSIGNED_INT: struct.Struct(_NATIVE + "I").pack,
    BaseType.LONG: struct.Struct(_NATIVE + "q").pack,
    BaseType.UNSIGNED_LONG: struct.Struct(_NATIVE + "Q").pack,
}


def _pads(lengths: Iterable[int]) -> Iterator[bytes]:
    """The zero bytes that bring each length to a multiple of 8."""
    return map(_PAD.__getitem__, map(and_, map(neg, lengths), repeat(7)))


class DictionaryEncoder:
    """Encodes snapshots as ``a{sv}`` (keys: full parameter paths); keeps one column table
    per schema object (the schema never changes). Use it from one thread at a time."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}

    def reply(self, objects: Snapshot) -> GLib.Variant:
        """The method reply ``(a{sv})`` (a one-member tuple serialises as its member)."""
        return _from_bytes("(a{sv})", self.encode(objects))

    def encode(self, objects: Snapshot) -> bytes:
        # The tables' lists are gone once _entries returns: the entries list holds the only
        # references, so _array frees each block's entries as it copies them out. bytes, not
        # the bytearray: GLib.Bytes copies bytes in one C call, a bytearray (or memoryview)
        # element by element, ~0.3 s for a whole tree with the GIL held.
        return bytes(_array(self._entries(objects)))

    def _entries(self, objects: Snapshot) -> list[bytes]:
        """Every entry of the array, in the snapshot's order."""
        names, values = objects.names, objects.values
        count = len(objects.paths)
        # Object i's entries are spans[i][starts[i]:ends[i]]: parallel lists, not a tuple per
        # object, whose 10^4 live containers would set off collections of the whole heap.
        spans: list[Sequence[bytes]] = [()] * count
        starts, ends = [0] * count, [0] * count
        groups: dict[str, tuple[_Table, list[int], list[str], list[Value]]] = {}
        end = 0
        for index, (path, schema, size) in enumerate(zip(objects.paths, objects.schemas, objects.sizes, strict=True)):
            start, end = end, end + size
            group = groups.get(schema.path)
            if group is None:
                group = groups[schema.path] = (self._table(schema), [], [], [])
            if size and names[start:end] == group[0].names:
                group[1].append(index)
                group[2].append(path)
                group[3].extend(values[start:end])
            elif size:
                spans[index] = _other_object(path, schema, names[start:end], values[start:end])
                ends[index] = size
        for table, indexes, paths, cells in groups.values():
            flat = table.entries(paths, cells)
            width = len(table.columns)
            for row, index in enumerate(indexes):
                spans[index], starts[index], ends[index] = flat, row * width, row * width + width
        del groups
        entries: list[bytes] = []
        for span, start, stop in zip(spans, starts, ends, strict=True):
            entries += span[start:stop]
        return entries

    def _table(self, schema: Object) -> _Table:
        table = self._tables.get(schema.path)
        if table is None:
            table = self._tables[schema.path] = _Table.of(schema)
        return table


@dataclass(frozen=True)
class _Column:
    """One parameter. Its entry in an object at ``prefix``: ``prefix``,
    ``heads[len(prefix) % 8]`` (the name, its NUL, padding to 8), the bytes ``values``
    makes of the value, ``tail``, then where the value begins (``len(prefix) + key``), in
    one byte if the entry is shorter than 256 bytes."""

    heads: tuple[bytes, ...]
    values: Callable[[list[Any]], Iterable[bytes]]
    tail: bytes
    key: int

    def entries(self, prefixes: list[bytes], lengths: list[int], residues: list[int], column: list[Any]) -> list[bytes]:
        framing = {length: _BYTE[min(length + self.key, 255)] for length in set(lengths)}
        parts = zip(
            prefixes,
            map(self.heads.__getitem__, residues),
            self.values(column),
            repeat(self.tail),
            map(framing.__getitem__, lengths),
        )
        entries = list(map(b"".join, parts))
        if max(map(len, entries), default=0) < 256:
            return entries
        return [  # some are long: their value offsets are wider than a byte
            entry if len(entry) < 256 else _wide(entry[:-1], length + self.key)
            for entry, length in zip(entries, lengths, strict=True)
        ]


def _wide(body: bytes, key_end: int) -> bytes:
    return body + key_end.to_bytes(_offset_size(len(body), 1), "little")


@dataclass(frozen=True)
class _Table:
    """The entries of the objects of one schema that carry every parameter, in its order."""

    names: list[str]
    columns: list[_Column]

    @classmethod
    def of(cls, schema: Object) -> _Table:
        return cls(list(schema.parameters), [_column(name, p.type) for name, p in schema.parameters.items()])

    def entries(self, paths: list[str], cells: list[Value]) -> list[bytes]:
        """The objects' entries, object after object; their values follow one another in ``cells``."""
        prefixes = list(map(methodcaller("encode"), paths))
        lengths = list(map(len, prefixes))
        residues = list(map(and_, lengths, repeat(7)))
        width = len(self.columns)
        flat: list[bytes] = [b""] * (len(paths) * width)
        for offset, column in enumerate(self.columns):
            flat[offset::width] = column.entries(prefixes, lengths, residues, cells[offset::width])
        return flat


def _column(name: str, data_type: DataType) -> _Column:
    key = name.encode() + b"\0"
    heads = tuple(key + _PAD[-(residue + len(key)) & 7] for residue in range(8))
    signature_tail = b"\0" + signature(data_type).encode()  # after a variant's value
    base = data_type.base
    if data_type.list is None and base is BaseType.STRING:
        return _Column(heads, _strings, b"\0" + signature_tail, len(key))
    if data_type.list is None and base is BaseType.DATETIME:
        return _Column(heads, _datetimes, b"\0" + signature_tail, len(key))
    if data_type.list is None and base in _PACKERS:
        return _Column(heads, partial(map, _PACKERS[base]), signature_tail, len(key))
    encode = variant_encoder(data_type)
    if data_type.list is not None:  # mostly empty or repeated: the cache answers in C
        encode = lru_cache(maxsize=1024)(encode)
    # booleans (a dict lookup, see variant_encoder), bytes, lists: the whole variant
    return _Column(heads, partial(map, encode), b"", len(key))


def _datetimes(column: list[Any]) -> Iterable[bytes]:
    return map(_ENCODE, map(_datetime, column))


def _strings(column: list[str]) -> Iterable[bytes]:
    encoded = list(map(_ENCODE, column))
    if b"\0" in b"".join(encoded):  # D-Bus strings hold no NUL: the slow path replaces it
        return [_string(value)[:-1] for value in column]
    return encoded


@lru_cache(maxsize=1024)
def _datetime(value: Any) -> str:
    # Few distinct values (mostly 0001-01-01T00:00:00Z, "unknown"): a cache hit is C.
    return format_datetime(value)


def _other_object(path: str, schema: Object, names: list[str], values: list[Value]) -> tuple[bytes, ...]:
    """The entries of an object with only some of its parameters, or another order."""
    prefix = path.encode()
    entries = []
    for name, value in zip(names, values, strict=True):
        key = prefix + name.encode() + b"\0"
        body = key + _PAD[-len(key) & 7] + variant_encoder(schema.parameters[name].type)(value)
        framing = len(key).to_bytes(_offset_size(len(body), 1), "little")
        entries.append(body + framing)
    return tuple(entries)


def _array(entries: list[bytes]) -> bytearray:
    """``a{sv}`` from its entries: each 8-aligned, then the entries' end offsets.

    Made ``_BLOCK`` entries at a time: each step is one C call holding the GIL, and over
    the ~1.6·10^5 entries of a whole tree one call took up to 25 ms, stalling the loop
    (which waits for the GIL) that long; between blocks the interpreter can hand it over.
    The array is written into one buffer of its final size and ``entries`` is emptied block
    by block as they are copied in, so the entries and the array are not held whole at the
    same time, nor the array's blocks beside the array, nor every offset as a Python int."""
    if not entries:
        return bytearray()
    padded = 0  # the entries' lengths with their padding
    for first in range(0, len(entries), _BLOCK):
        lengths = list(map(len, entries[first : first + _BLOCK]))
        padded += sum(lengths) + sum(map(len, _pads(lengths)))
    body = padded - len(_PAD[-len(entries[-1]) & 7])  # the offsets follow the last entry unpadded
    size = _offset_size(body, len(entries))
    array = bytearray(body + size * len(entries))
    start = 0  # where the block begins in the array
    for first in range(0, len(entries), _BLOCK):
        stop = min(first + _BLOCK, len(entries))
        block = entries[first:stop]
        entries[first:stop] = repeat(b"", stop - first)  # the block's entries are freed with it
        lengths = list(map(len, block))
        pads = list(_pads(lengths))
        ends = list(map(add, accumulate(map(len, pads), add, initial=start), accumulate(lengths)))
        if stop == len(entries):
            pads[-1] = b""
        pieces: list[bytes] = [b""] * (2 * len(block))
        pieces[::2] = block
        pieces[1::2] = pads
        del block
        joined = b"".join(pieces)
        del pieces
        array[start : start + len(joined)] = joined
        start += len(joined)
        offsets = _pack_offsets(ends, size)
        array[body + first * size : body + first * size + len(offsets)] = offsets
    return array
