"""GetBulk's JSON encoding against the tree's own TR-106 text (ResolvedObject.text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

pytestmark = pytest.mark.unit

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject (gi) is not installed")

from dsm_tr181.buses.dbus_bulk import BulkEncoder, snapshot  # noqa: E402
from dsm_tr181.schema.model import Object, Parameter  # noqa: E402
from dsm_tr181.schema.types import UNKNOWN_TIME, BaseType, DataType, ListFacet, Value  # noqa: E402
from dsm_tr181.tree.datamodel import DataModel  # noqa: E402
from dsm_tr181.tree.results import ResolvedObject  # noqa: E402

# One parameter of every kind the encoder tells apart, lists of non-strings included.
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


def row(number: int, values: dict[str, Value] | None = None) -> ResolvedObject:
    return ResolvedObject(f"Device.Row.{number}.", ROW, MappingProxyType(values if values is not None else VALUES))


def encoded(objects: list[ResolvedObject]) -> dict[str, dict[str, str]]:
    return json.loads(BulkEncoder().encode(snapshot(objects)))  # type: ignore[no-any-return]


def test_every_kind_of_value_is_its_tr106_text() -> None:
    objects = [row(1), row(2, VALUES | {"Flag": False, "Names": (), "When": UNKNOWN_TIME})]
    document = encoded(objects)
    assert document == {o.path: o.text() for o in objects}
    assert document["Device.Row.1."] | {"Text": ""} == {
        "Text": "", "Flag": "true", "Int": "-2147483648", "UInt": "4294967295",
        "Long": "-9223372036854775808", "ULong": "18446744073709551615", "When": "2024-02-29T11:00:00.5Z",
        "Blob": "AAH/", "Mac": "0011223344ff", "Names": "Device.X.1,Device.X.2", "Numbers": "1,2,3",
        "Times": "0001-01-01T00:00:00Z",
    }  # fmt: skip
    assert document["Device.Row.2."]["When"] == "0001-01-01T00:00:00Z"


def test_objects_keep_their_order_and_parameters_theirs() -> None:
    objects = [row(3), row(1), row(2)]
    document = encoded(objects)
    assert list(document) == ["Device.Row.3.", "Device.Row.1.", "Device.Row.2."]
    assert [list(params) for params in document.values()] == [list(TYPES)] * 3


def test_objects_with_some_parameters_or_another_order() -> None:
    partial = row(1, {"Flag": True, "When": UNKNOWN_TIME})
    reordered = row(2, dict(reversed(VALUES.items())))
    document = encoded([partial, reordered, row(3)])
    assert document == {o.path: o.text() for o in (partial, reordered, row(3))}


def test_an_object_met_twice_is_merged_at_its_first_place() -> None:
    objects = [row(1, {"Flag": True}), row(2), row(1, {"Int": 5})]
    document = encoded(objects)
    assert list(document) == ["Device.Row.1.", "Device.Row.2."]
    assert document["Device.Row.1."] == {"Flag": "true", "Int": "5"}


def test_nothing_is_an_empty_document() -> None:
    assert BulkEncoder().encode(snapshot([])) == b"{}"


@pytest.mark.parametrize(
    "stored, sent",
    [
        ("a\x00b", "a\ufffdb"),  # D-Bus strings hold no NUL: as Get sends it
        ("\\\x00", "\\\ufffd"),  # an escaped backslash before it
        ("\\u0000", "\\u0000"),  # the text of an escape is no NUL
        ("\\\\u0000", "\\\\u0000"),
        ("lone \udcff", "lone ?"),  # surrogateescape'd file names
    ],
)
def test_strings_d_bus_cannot_carry(stored: str, sent: str) -> None:
    for values in ({"Text": stored}, VALUES | {"Text": stored}):  # both encodings
        assert encoded([row(1, values)])["Device.Row.1."]["Text"] == sent


def test_reply_is_glibs_string_tuple() -> None:
    text = BulkEncoder().encode(snapshot([row(1)])).decode()
    reply = BulkEncoder().reply(snapshot([row(1)]))
    reference = GLib.Variant("(s)", (text,))
    assert reply.get_type_string() == "(s)"
    assert bytes(reply.get_data_as_bytes().get_data()) == bytes(reference.get_data_as_bytes().get_data())
    assert "é" in text  # UTF-8, not \u-escaped


def test_a_tree_with_hidden_and_computed_values(dm: DataModel) -> None:
    dm.update("Device.Test.", {"Secret": "hush", "Key": "k", "Tags": ("x", "y"), "Blob": b"\x00"})
    dm.add_row("Device.Test.Item.", {"Name": "first"})
    dm.on_get("Device.Test.Level", lambda node: 7)
    objects = [o for result in dm.get(["Device."]) for o in result.resolved]
    document = encoded(objects)
    assert document == {o.path: o.text() for o in objects}
    test = document["Device.Test."]
    assert (test["Secret"], test["Key"], test["Level"], test["Tags"]) == ("", "", "7", "x,y")


def test_collections_paused_restores_what_it_found() -> None:
    import gc

    from dsm_tr181.buses.bulk_json import collections_paused

    assert gc.isenabled()
    with pytest.raises(ValueError), collections_paused():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
