"""The bus contract, one suite for every front end: what a controller sees of the data model
(get/set/add/delete/operate/supported/instances/events), the faults it gets (USP 7000-series
codes carried by the bus's own error form) and the notifications (value changes, rows,
events, completion of asynchronous commands).

Served: tests/unit/data/test-model.xml (a creatable table, a synchronous and an
asynchronous command, an event) on D-Bus (a private dbus-daemon), the control socket and
rbus (the librbus stand-in, tests/support/rbus_standin.py; the real librbus when
DSM_RBUS_LIBRARY and DSM_RTROUTED are set). What a bus cannot carry is declared in its
:class:`~tests.contract.buses.Capabilities`, and the contract states what it does instead:
each such case asserts the bus's own answer, so README's front-end table is tested both
ways. What only one bus does (D-Bus typing and GetBulk, the control socket's framing and
the original DSM's verbs, rbus's elements and tables) stays in that bus's own test module.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.datamodel import CommandCall
from tests.contract.buses import BusFault, Served

pytestmark = pytest.mark.integration

T = "Device.Test."
ITEM = T + "Item."


def fault_of(action: Any) -> int:
    with pytest.raises(BusFault) as caught:
        action()
    return caught.value.code


def add_items(served: Served, *names: str) -> list[str]:
    return [served.client.add(ITEM, {"Name": name}) for name in names]


def test_get_parameters_objects_and_wildcards(served: Served) -> None:
    client = served.client
    served.loop.call(lambda: served.dm.set({T + "Level": "7", T + "Mode": "Fast"}))
    assert client.get([T + "Level", T + "Mode"]) == {T + "Level": "7", T + "Mode": "Fast"}
    first, second = add_items(served, "one", "two")
    rows = client.get([ITEM])
    assert rows[first + "Name"] == "one" and rows[second + "Name"] == "two"
    assert rows[first + "Weight"] == "7"  # the schema's default
    assert client.get([ITEM + "*.Name"]) == {first + "Name": "one", second + "Name": "two"}


def test_row_aliases(served: Served) -> None:
    served.loop.call(lambda: served.dm.add_row(ITEM, {"Name": "one", "Alias": "first"}))
    served.synced()
    assert list(served.client.get([ITEM + "[first].Name"]).values()) == ["one"]


def test_reference_following(served: Served) -> None:
    served.loop.call(lambda: served.dm.add_row(T + "Group.", {"Title": "fixed"}))
    served.loop.call(lambda: served.dm.set({T + "Owner": T + "Group.1"}))
    served.synced()
    if served.caps.reference_following:
        assert served.client.get([T + "Owner+.Title"]) == {T + "Group.1.Title": "fixed"}
    else:  # the bus parses names itself: "Owner+" is a name nobody has
        assert fault_of(lambda: served.client.get([T + "Owner+.Title"])) == served.unknown(FaultCode.INVALID_PATH)


def test_search_paths(served: Served) -> None:
    _first, second = add_items(served, "one", "two")
    search = ITEM + '[Name=="two"].Name'
    if served.caps.search_paths:
        assert served.client.get([search]) == {second + "Name": "two"}
    else:  # the bus parses names itself: an expression in a row's place is an alias of no row
        assert fault_of(lambda: served.client.get([search])) == served.fault(FaultCode.INVALID_PATH)


@pytest.mark.parametrize(
    ("path", "code", "registered"),
    [
        (T + "Nope", FaultCode.INVALID_PATH, False),
        ("Device.Test..Level", FaultCode.INVALID_PATH_SYNTAX, False),
        (ITEM + "99.Name", FaultCode.INVALID_PATH, True),  # a name of the model, of no row
    ],
)
def test_get_faults(served: Served, path: str, code: FaultCode, registered: bool) -> None:
    if code is FaultCode.INVALID_PATH_SYNTAX and not served.caps.path_syntax:
        code = FaultCode.INVALID_PATH  # the bus knows no syntax: merely a name nobody has
    expected = served.fault(code) if registered else served.unknown(code)
    assert fault_of(lambda: served.client.get([path])) == expected


def test_set_applies_all_or_nothing(served: Served) -> None:
    client = served.client
    assert client.set({T + "Level": "150", T + "Mode": "Slow"}) == {T + "Level": "150", T + "Mode": "Slow"}
    assert client.get([T + "Level"]) == {T + "Level": "150"}
    refused = {
        T + "Busy": FaultCode.NOT_WRITABLE,
        T + "Level": FaultCode.INVALID_VALUE,  # outside its ranges
        T + "Signed": FaultCode.INVALID_TYPE,
        T + "Mode": FaultCode.INVALID_VALUE,  # not an enumerated value
    }
    bad = {T + "Busy": "true", T + "Level": "55", T + "Signed": "high", T + "Mode": "Medium"}
    for path, code in refused.items():
        assert fault_of(lambda path=path: client.set({path: bad[path]})) == served.fault(code), path
    # One good and one bad value: nothing applies.
    assert fault_of(lambda: client.set({T + "Level": "5", T + "Busy": "true"})) == served.fault(FaultCode.NOT_WRITABLE)
    assert client.get([T + "Level"]) == {T + "Level": "150"}
    if served.caps.partial_set:  # with allow_partial what could be applied is, and answered
        assert client.set({T + "Level": "5", T + "Busy": "true"}, allow_partial=True) == {T + "Level": "5"}


def test_add_instances_and_delete_rows(served: Served) -> None:
    client = served.client
    first, second = add_items(served, "one", "two")
    assert first == ITEM + "1." and second == ITEM + "2."
    assert client.instances(ITEM) == [first, second]
    assert fault_of(lambda: client.add(ITEM, {"Nope": "x"})) == served.unknown(FaultCode.UNSUPPORTED_PARAMETER)
    enabled = client.add(ITEM, {"Name": "on", "Enable": "true"})
    code = fault_of(lambda: client.add(ITEM, {"Name": "on", "Enable": "true"}))  # keys unique among enabled rows
    assert code == served.fault(FaultCode.DUPLICATE_KEY)
    # Nothing is left of a refused add (on rbus: the controller removes the row it added).
    assert client.instances(ITEM) == [first, second, enabled]
    client.delete([enabled])
    assert fault_of(lambda: client.add(T + "Group.", {})) == served.fault(FaultCode.NOT_CREATABLE)
    assert fault_of(lambda: client.add(T, {})) == served.fault(FaultCode.NOT_A_TABLE)
    assert client.delete([first]) == [first]
    assert client.instances(ITEM) == [second]
    assert fault_of(lambda: client.get([first + "Name"])) == served.fault(FaultCode.INVALID_PATH)
    third = client.add(ITEM, {"Name": "three"})
    assert int(third.removeprefix(ITEM).rstrip(".")) > 2  # instance numbers are not reused
    served.loop.call(lambda: served.dm.add_row(T + "Group.", {"Title": "fixed"}))
    served.synced()
    assert fault_of(lambda: client.delete([T + "Group.1."])) in (
        served.fault(FaultCode.DELETE_FAILURE), served.fault(FaultCode.NOT_CREATABLE),
    )  # fmt: skip


def test_add_with_parameters_is_atomic_or_declared_not(served: Served) -> None:
    """USP Add creates the row with its parameters or not at all; rbusTable_addRow takes an
    alias only, so on rbus a row is there, with its defaults, before its values are set."""
    seen: list[str] = []
    watched = served.loop.call(lambda: served.dm.subscribe(lambda note: seen.append(note.path)))
    try:
        served.client.add(ITEM, {"Name": "set-after"})
    finally:
        served.loop.call(watched.cancel)
    row = next(path for path in seen if path.startswith(ITEM) and path.endswith("."))
    changed_after_creation = row + "Name" in seen
    assert changed_after_creation is not served.caps.atomic_add


def test_supported_data_model(served: Served) -> None:
    if not served.caps.supported_dm:
        pytest.skip("declared: this bus has no GetSupportedDM (Capabilities.supported_dm)")
    supported = served.client.supported(ITEM + "{i}.")
    names = supported[ITEM + "{i}."]
    assert {"Alias", "Enable", "Name", "Weight", "Labels", "Id"} <= set(names)
    whole = served.client.supported(T)
    assert {"Add()", "Slow()"} <= set(whole[T])


def test_only_the_model_is_published(served: Served) -> None:
    """A discovery lists the served model's names and nothing of the provider's own (no
    private helper: the rbus outbox rides on a served parameter, rbus_outbox.py)."""
    if not served.caps.discovery:
        pytest.skip("declared: this bus lists no registered names (Capabilities.discovery); GetSupportedDM says it")
    schema = served.dm.schema
    model = {"dsm-tr181"}  # the component's own route, then its elements; tables lose their dot
    for table in [obj.path for obj in schema.objects.values() if obj.multi_instance]:
        model |= {table.removesuffix("."), table.removesuffix(".{i}.")}  # registered as "A.{i}." or "A."
    for obj in schema.objects.values():
        model |= {obj.path + name for name in [*obj.parameters, *obj.commands, *obj.events]}
    published = set(served.client.published())
    assert published <= model, published - model
    assert {T + "Level", T + "Add()", T + "Happened!", ITEM + "{i}.Name"} <= published


def test_synchronous_command(served: Served) -> None:
    def add(call: CommandCall) -> dict[str, int]:
        return {"Sum": call.args["A"] + call.args["B"]}

    served.loop.call(served.dm.on_command, T + "Add()", add)
    assert served.client.operate(T + "Add()", {"A": "2", "B": "3"}) == ("", {"Sum": "5"})
    assert served.client.operate(T + "Add()", {"A": "2"}) == ("", {"Sum": "7"})  # B's default
    code = fault_of(lambda: served.client.operate(T + "Add()", {"B": "3"}))  # A is mandatory
    assert code == served.fault(FaultCode.INVALID_COMMAND_ARGUMENTS)
    assert fault_of(lambda: served.client.operate(T + "Nope()", {})) == served.unknown(FaultCode.INVALID_PATH)


def test_asynchronous_command_completes_with_outputs_or_fault(served: Served) -> None:
    async def slow(call: CommandCall) -> dict[str, bool]:
        await asyncio.sleep(call.args["Delay"] / 1000)
        if call.args["Delay"] == 13:
            raise Fault(FaultCode.COMMAND_FAILURE, "unlucky")
        return {"Done": True}

    served.loop.call(served.dm.on_command, T + "Slow()", slow)
    with served.client.watch() as watch:
        if served.caps.request_ids:
            ok, outputs = served.client.operate(T + "Slow()", {"Delay": "50"})
            assert ok and outputs == {}
            bad, _ = served.client.operate(T + "Slow()", {"Delay": "13"})
        else:  # the (late) answer of the call is the completion: invoked asynchronously
            ok = served.client.operate_later(T + "Slow()", {"Delay": "50"}, watch)
            bad = served.client.operate_later(T + "Slow()", {"Delay": "13"}, watch)
        assert bad and bad != ok
        completions = {}
        while len(completions) < 2:
            seen = watch.wait("OperationComplete", T + "Slow()")
            watch.seen.remove(seen)
            completions[seen.request_id] = seen
    assert completions[ok].fault == 0 and completions[ok].values == {"Done": "true"}
    assert completions[bad].fault == served.fault(FaultCode.COMMAND_FAILURE)


def test_notifications_of_values_rows_and_events(served: Served) -> None:
    with served.client.watch() as watch:
        served.client.set({T + "Level": "9"})
        assert watch.wait("ValueChange", T + "Level").values == {"value": "9"}
        row = served.client.add(ITEM, {"Name": "watched"})
        created = watch.wait("ObjectCreation", row).values
        if served.caps.creation_keys:
            assert created.get("Name") == "watched"
        else:  # rbus: OBJECT_CREATED names the row (rowName, instNum, alias)
            assert created["instNum"] == row.removeprefix(ITEM).rstrip(".") and "Name" not in created
        served.loop.call(lambda: served.dm.update(served.dm.node(row), {"Enable": True}))
        assert watch.wait("ValueChange", row + "Enable").values == {"value": "true"}
        served.client.delete([row])
        watch.wait("ObjectDeletion", row)
        served.loop.call(lambda: served.dm.emit_event(T + "Happened!", {"What": "it", "Detail.Code": 4}))
        event = watch.wait("Event", T + "Happened!")
        assert event.values["What"] == "it" and event.values["Detail.Code"] == "4"
