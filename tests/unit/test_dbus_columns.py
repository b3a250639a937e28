"""Get's column-wise ``a{sv}`` serialisation, byte for byte against GLib's own."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

pytestmark = pytest.mark.unit

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject (gi) is not installed")

from dsm_tr181.buses.dbus_bulk import snapshot  # noqa: E402
from dsm_tr181.buses.dbus_columns import DictionaryEncoder  # noqa: E402
from dsm_tr181.schema.model import Object, Parameter  # noqa: E402
from dsm_tr181.schema.types import UNKNOWN_TIME, BaseType, DataType, ListFacet, Value, format_datetime  # noqa: E402
from dsm_tr181.tree.results import ResolvedObject  # noqa: E402

SIGNATURES = {
    BaseType.STRING: "s", BaseType.BOOLEAN: "b", BaseType.INT: "i", BaseType.UNSIGNED_INT: "u",
    BaseType.LONG: "x", BaseType.UNSIGNED_LONG: "t", BaseType.DATETIME: "s", BaseType.BASE64: "ay",
    BaseType.HEX_BINARY: "ay",
}  # fmt: skip
TYPES = {
    "Text": DataType(BaseType.STRING),
    "Flag": DataType(BaseType.BOOLEAN),
    "Int": DataType(BaseType.INT),
    "UInt": DataType(BaseType.UNSIGNED_INT),
    "Long": DataType(BaseType.LONG),
    "ULong": DataType(BaseType.UNSIGNED_LONG),
    "When": DataType(BaseType.DATETIME),
    "Blob": DataType(BaseType.BASE64),
    "Mac": DataType(BaseType.HEX_BINARY),
    "Names": DataType(BaseType.STRING, list=ListFacet()),
    "Numbers": DataType(BaseType.UNSIGNED_INT, list=ListFacet()),
    "Times": DataType(BaseType.DATETIME, list=ListFacet()),
}
ROW = Object("Device.Row.{i}.", parameters={n: Parameter(n, "Device.Row.{i}." + n, t) for n, t in TYPES.items()})
VALUES: dict[str, Value] = {
    "Text": 'say "hi"\\ é ☃ 😀\n\t',
    "Flag": True,
    "Int": -(2**31),
    "UInt": 2**32 - 1,
    "Long": -(2**63),
    "ULong": 2**64 - 1,
    "When": datetime(2024, 2, 29, 11, 0, 0, 500000, tzinfo=UTC),
    "Blob": b"\x00\x01\xff",
    "Mac": bytes.fromhex("0011223344ff"),
    "Names": ("Device.X.1", "Device.X.2"),
    "Numbers": (1, 2, 3),
    "Times": (UNKNOWN_TIME,),
}


def row(path: str, values: dict[str, Value]) -> ResolvedObject:
    return ResolvedObject(path, ROW, MappingProxyType(values))


def plain(data_type: DataType, value: Value) -> GLib.Variant:
    """``value`` as Get sends it, built the plain GLib way."""
    item = SIGNATURES[data_type.base]

    def one(scalar: Any) -> Any:
        if data_type.base is BaseType.DATETIME:
            return format_datetime(scalar)
        if isinstance(scalar, str):
            return scalar.encode(errors="replace").decode().replace("\0", "\ufffd")
        return scalar

    if data_type.list is not None:
        return GLib.Variant("a" + item, [one(v) for v in value])  # type: ignore[union-attr]
    return GLib.Variant(item, one(value))


def assert_glibs(objects: list[ResolvedObject]) -> None:
    reference = GLib.Variant(
        "a{sv}", {o.path + name: plain(TYPES[name], value) for o in objects for name, value in o.params.items()}
    )
    encoder = DictionaryEncoder()
    for _ in range(2):  # the second time with the tables made the first
        ours = encoder.encode(snapshot(objects))
        assert ours == bytes(reference.get_data_as_bytes().get_data())
    reply = encoder.reply(snapshot(objects))
    assert reply.get_type_string() == "(a{sv})" and reply.get_child_value(0).equal(reference)


def test_every_type_in_full_rows_and_in_others() -> None:
    partial = {"Text": "only", "Int": 5}
    reordered = dict(reversed(VALUES.items()))
    assert_glibs([row("Device.Row.1.", VALUES), row("Device.Row.2.", partial), row("Device.Row.33.", reordered)])


@pytest.mark.parametrize("length", [1, 7, 8, 200, 254, 255, 300, 70_000])
def test_entries_and_arrays_at_every_offset_size(length: int) -> None:
    """Entries past 255 bytes and arrays past 255 bytes / 64 KiB take wider framing offsets."""
    rows = [row(f"Device.Row.{i}.", VALUES | {"Text": "é" * length, "Names": ("x" * length,)}) for i in range(1, 6)]
    assert_glibs(rows)


@pytest.mark.parametrize("text", ["bad\x00byte", "lone \udcff", "\x00"])
def test_strings_d_bus_cannot_carry(text: str) -> None:
    assert_glibs([row("Device.Row.1.", VALUES | {"Text": text}), row("Device.Row.2.", VALUES)])


def test_many_rows_with_paths_of_every_length() -> None:
    rows = [row(f"Device.Row.{i}.", VALUES | {"Int": i, "Flag": i % 2 == 0}) for i in range(1, 1200, 7)]
    assert_glibs(rows)


def test_nothing_is_an_empty_dictionary() -> None:
    assert DictionaryEncoder().encode(snapshot([])) == b""
    assert_glibs([row("Device.Row.1.", {})])


@pytest.mark.parametrize("block", [1, 5, 12, 13])
def test_arrays_made_in_blocks(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """The array is made a block of entries at a time (the GIL is free between blocks):
    blocks ending inside, at and past the last entry, with 1-, 2- and 4-byte offsets."""
    monkeypatch.setattr("dsm_tr181.buses.dbus_columns._BLOCK", block)
    assert_glibs([row("Device.Row.1.", {"Text": "a", "Int": 1})])
    assert_glibs([row(f"Device.Row.{i}.", VALUES | {"Int": i}) for i in range(1, 40)])
    assert_glibs([row(f"Device.Row.{i}.", VALUES | {"Text": "é" * 30_000}) for i in range(1, 4)])


def test_a_large_reply_is_not_held_twice() -> None:
    """The encoder never holds more than about two arrays' worth: the entries and the array
    while they are copied in (each block's entries freed once copied), then the array and
    the bytes GLib takes (5.3x the array when every entry, every offset and the array's
    blocks were kept until one last join)."""
    rows = [row(f"Device.Row.{i}.", VALUES | {"Int": i, "Text": f"text {i}"}) for i in range(1, 5001)]
    objects, encoder = snapshot(rows), DictionaryEncoder()
    encoder.encode(snapshot(rows[:1]))  # its column tables, made once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        array = encoder.encode(objects)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 4.5 * len(array)  # 3.6x here
    assert type(array) is bytes  # GLib.Bytes takes a bytearray element by element (~0.3 s per 10 MB)
