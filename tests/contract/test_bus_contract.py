"""The bus contract, one suite for every front end: what a controller sees of the data model
(get/set/add/delete/operate/supported/instances/events), the faults it gets (USP 7000-series
codes carried by the bus's own error form) and the notifications (value changes, rows,
events, completion of asynchronous commands).

Served: tests/unit/data/test-model.xml (a creatable table, a synchronous and an
asynchronous command, an event) on D-Bus (a private dbus-daemon) and the control socket.
What only one bus does (D-Bus typing and GetBulk, the control socket's framing and the
original DSM's verbs, rbus's elements and tables) stays in that bus's own test module.
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


def test_get_parameters_objects_and_search_paths(served: Served) -> None:
    client = served.client
    served.loop.call(lambda: served.dm.set({T + "Level": "7", T + "Mode": "Fast"}))
    assert client.get([T + "Level", T + "Mode"]) == {T + "Level": "7", T + "Mode": "Fast"}
    first, second = add_items(served, "one", "two")
    rows = client.get([ITEM])
    assert rows[first + "Name"] == "one" and rows[second + "Name"] == "two"
    assert rows[first + "Weight"] == "7"  # the schema's default
    assert client.get([ITEM + "*.Name"]) == {first + "Name": "one", second + "Name": "two"}
    assert client.get([ITEM + '[Name=="two"].Name']) == {second + "Name": "two"}


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (T + "Nope", FaultCode.INVALID_PATH),
        ("Device.Test..Level", FaultCode.INVALID_PATH_SYNTAX),
        (ITEM + "99.Name", FaultCode.INVALID_PATH),
    ],
)
def test_get_faults(served: Served, path: str, code: FaultCode) -> None:
    assert fault_of(lambda: served.client.get([path])) == code.usp


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
        assert fault_of(lambda path=path: client.set({path: bad[path]})) == code.usp, path
    # One good and one bad value: nothing applies.
    assert fault_of(lambda: client.set({T + "Level": "5", T + "Busy": "true"})) == FaultCode.NOT_WRITABLE.usp
    assert client.get([T + "Level"]) == {T + "Level": "150"}
    # With allow_partial what could be applied is, and answered.
    assert client.set({T + "Level": "5", T + "Busy": "true"}, allow_partial=True) == {T + "Level": "5"}


def test_add_instances_and_delete_rows(served: Served) -> None:
    client = served.client
    first, second = add_items(served, "one", "two")
    assert first == ITEM + "1." and second == ITEM + "2."
    assert client.instances(ITEM) == [first, second]
    assert fault_of(lambda: client.add(ITEM, {"Nope": "x"})) == FaultCode.UNSUPPORTED_PARAMETER.usp
    enabled = client.add(ITEM, {"Name": "on", "Enable": "true"})
    code = fault_of(lambda: client.add(ITEM, {"Name": "on", "Enable": "true"}))  # keys unique among enabled rows
    assert code == FaultCode.DUPLICATE_KEY.usp
    client.delete([enabled])
    assert fault_of(lambda: client.add(T + "Group.", {})) == FaultCode.NOT_CREATABLE.usp
    assert fault_of(lambda: client.add(T, {})) == FaultCode.NOT_A_TABLE.usp
    assert client.delete([first]) == [first]
    assert client.instances(ITEM) == [second]
    assert fault_of(lambda: client.get([first + "Name"])) == FaultCode.INVALID_PATH.usp
    third = client.add(ITEM, {"Name": "three"})
    assert int(third.removeprefix(ITEM).rstrip(".")) > 2  # instance numbers are not reused
    served.loop.call(lambda: served.dm.add_row(T + "Group.", {"Title": "fixed"}))
    assert fault_of(lambda: client.delete([T + "Group.1."])) in (
        FaultCode.DELETE_FAILURE.usp, FaultCode.NOT_CREATABLE.usp,
    )  # fmt: skip


def test_supported_data_model(served: Served) -> None:
    supported = served.client.supported(ITEM + "{i}.")
    names = supported[ITEM + "{i}."]
    assert {"Alias", "Enable", "Name", "Weight", "Labels", "Id"} <= set(names)
    whole = served.client.supported(T)
    assert {"Add()", "Slow()"} <= set(whole[T])


def test_synchronous_command(served: Served) -> None:
    def add(call: CommandCall) -> dict[str, int]:
        return {"Sum": call.args["A"] + call.args["B"]}

    served.loop.call(served.dm.on_command, T + "Add()", add)
    assert served.client.operate(T + "Add()", {"A": "2", "B": "3"}) == ("", {"Sum": "5"})
    assert served.client.operate(T + "Add()", {"A": "2"}) == ("", {"Sum": "7"})  # B's default
    code = fault_of(lambda: served.client.operate(T + "Add()", {"B": "3"}))  # A is mandatory
    assert code == FaultCode.INVALID_COMMAND_ARGUMENTS.usp
    assert fault_of(lambda: served.client.operate(T + "Nope()", {})) == FaultCode.INVALID_PATH.usp


def test_asynchronous_command_completes_with_outputs_or_fault(served: Served) -> None:
    async def slow(call: CommandCall) -> dict[str, bool]:
        await asyncio.sleep(call.args["Delay"] / 1000)
        if call.args["Delay"] == 13:
            raise Fault(FaultCode.COMMAND_FAILURE, "unlucky")
        return {"Done": True}

    served.loop.call(served.dm.on_command, T + "Slow()", slow)
    with served.client.watch() as watch:
        ok, outputs = served.client.operate(T + "Slow()", {"Delay": "50"})
        assert ok and outputs == {}
        bad, _ = served.client.operate(T + "Slow()", {"Delay": "13"})
        assert bad and bad != ok
        completions = {}
        while len(completions) < 2:
            seen = watch.wait("OperationComplete", T + "Slow()")
            watch.seen.remove(seen)
            completions[seen.request_id] = seen
    assert completions[ok].fault == 0 and completions[ok].values == {"Done": "true"}
    assert completions[bad].fault == FaultCode.COMMAND_FAILURE.usp


def test_notifications_of_values_rows_and_events(served: Served) -> None:
    with served.client.watch() as watch:
        served.client.set({T + "Level": "9"})
        assert watch.wait("ValueChange", T + "Level").values == {"value": "9"}
        row = served.client.add(ITEM, {"Name": "watched"})
        assert watch.wait("ObjectCreation", row).values.get("Name") == "watched"
        served.loop.call(lambda: served.dm.update(served.dm.node(row), {"Enable": True}))
        assert watch.wait("ValueChange", row + "Enable").values == {"value": "true"}
        served.client.delete([row])
        watch.wait("ObjectDeletion", row)
        served.loop.call(lambda: served.dm.emit_event(T + "Happened!", {"What": "it", "Detail.Code": 4}))
        event = watch.wait("Event", T + "Happened!")
        assert event.values["What"] == "it" and event.values["Detail.Code"] == "4"
