"""The instance tree and the operations API, on a small test model."""

import asyncio
from datetime import UTC, datetime

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.datamodel import CommandCall, DataModel
from dsm_tr181.tree.notifications import Kind, Notification, Notifications, Subscription

pytestmark = pytest.mark.unit

T = "Device.Test."


def items(dm: DataModel, *names: str, enable: bool = True) -> list[str]:
    return [dm.add(f"{T}Item.", {"Name": name, "Enable": "true" if enable else "false"})[0].path for name in names]


def code(call) -> FaultCode:  # type: ignore[no-untyped-def]
    with pytest.raises(Fault) as info:
        call()
    return info.value.code


# -- get ---------------------------------------------------------------------------------------


def test_partial_path_get_returns_every_descendant(dm: DataModel) -> None:
    items(dm, "a", "b")
    result = dm.get(["Device."])[0]
    assert result.fault is None
    paths = [r.path for r in result.resolved]
    assert paths == ["Device.", "Device.Test.", f"{T}Item.1.", f"{T}Item.1.Stats.", f"{T}Item.2.", f"{T}Item.2.Stats."]
    assert result.resolved[1].params["ItemNumberOfEntries"] == 2
    assert dm.get_values([f"{T}Item.2."])[f"{T}Item.2.Name"] == "b"


def test_max_depth_limits_sub_objects(dm: DataModel) -> None:
    items(dm, "a")
    assert [r.path for r in dm.get(["Device.Test."], max_depth=1)[0].resolved] == ["Device.Test."]
    assert [r.path for r in dm.get(["Device.Test."], max_depth=2)[0].resolved] == ["Device.Test.", f"{T}Item.1."]


def test_defaults_and_text_encoding(dm: DataModel) -> None:
    (path,) = items(dm, "a")
    resolved = dm.get([path])[0].resolved[0]
    assert resolved.params["Weight"] == 7
    assert resolved.text()["Weight"] == "7" and resolved.text()["Enable"] == "true"
    assert dm.get_values(["Device.Label"]) == {"Device.Label": "lab"}


def test_wildcard_alias_and_search_gets(dm: DataModel) -> None:
    items(dm, "a", "b", "c")
    dm.set({f"{T}Item.2.Weight": "20", f"{T}Item.3.Weight": "30"})
    assert list(dm.get_values([f"{T}Item.*.Name"]).values()) == ["a", "b", "c"]
    assert dm.get_values([f"{T}Item.[cpe-2].Name"]) == {f"{T}Item.2.Name": "b"}
    assert dm.get_values([f'{T}Item.[Alias=="cpe-3"].Name']) == {f"{T}Item.3.Name": "c"}
    searches = {
        "Weight>7": ["b", "c"],
        "Weight>=20": ["b", "c"],
        "Weight<20": ["a"],
        "Weight<=20": ["a", "b"],
        "Weight!=20": ["a", "c"],
        'Weight>7&&Name!="c"': ["b"],
        "Enable==true": ["a", "b", "c"],
        "Enable==0": [],
        "Stats.Hits==0": ["a", "b", "c"],
    }
    for expression, names in searches.items():
        assert list(dm.get_values([f"{T}Item.[{expression}].Name"]).values()) == names, expression
    assert dm.get([f'{T}Item.[Name=="zzz"].Name'])[0].resolved == []  # R-GET.1a


def test_search_errors(dm: DataModel) -> None:
    items(dm, "a")
    faults = {
        f"{T}Item.[Name==a].Name": FaultCode.INVALID_PATH_SYNTAX,  # string constants are quoted
        f'{T}Item.[Enable=="true"].Name': FaultCode.INVALID_PATH_SYNTAX,  # booleans are not
        f'{T}Item.[Name<"b"].Name': FaultCode.INVALID_PATH_SYNTAX,  # ordering needs numbers
        f"{T}Item.[Weight==x].Name": FaultCode.INVALID_TYPE,
        f"{T}Item.[Nope==1].Name": FaultCode.INVALID_PATH,
        f"{T}Item.9.Name": FaultCode.INVALID_PATH,  # R-GET.0
        f"{T}Nope.": FaultCode.INVALID_PATH,
        f"{T}Item.1.Nope": FaultCode.INVALID_PATH,
    }
    for path, expected in faults.items():
        fault = dm.get([path])[0].fault
        assert fault is not None and fault.code is expected, path
        assert path in str(fault) or fault.path


def test_list_contains_and_reference_following(dm: DataModel) -> None:
    a, b = items(dm, "a", "b")
    dm.set({f"{T}Members": f"{a},{b}", f"{T}Tags": "x,y"})
    assert dm.get_values([f"{T}Members#2+.Name"]) == {f"{b}Name": "b"}
    assert list(dm.get_values([f"{T}Members#*+.Name"]).values()) == ["a", "b"]
    assert dm.get_values([f"{T}Members+.Name"]) == {f"{a}Name": "a"}
    dm.set({f"{a}Labels": "red,blue", f"{b}Labels": "blue"})
    assert list(dm.get_values([f'{T}Item.[Labels~="red"].Name']).values()) == ["a"]
    assert list(dm.get_values([f'{T}Item.[Labels~="blue"].Name']).values()) == ["a", "b"]
    assert dm.get([f'{T}Item.[Name~="a"].Name'])[0].fault.code is FaultCode.INVALID_PATH_SYNTAX


def test_hidden_and_secured_values_are_never_returned(dm: DataModel) -> None:
    dm.set({f"{T}Secret": "hunter2", f"{T}Key": "k3y"})
    values = dm.get_values([T])
    assert values[f"{T}Secret"] == "" and values[f"{T}Key"] == ""
    assert dm.get_values([f"{T}Secret"]) == {f"{T}Secret": ""}
    assert dm.value(f"{T}Secret") == "hunter2"  # the product itself can read it
    seen: list[Notification] = []
    dm.subscribe(seen.append, {Kind.VALUE_CHANGE})
    dm.set({f"{T}Secret": "other"})
    assert seen[0].value == ""
    result = dm.set({f"{T}Secret": "third"})
    assert result.updated[0].params == {"Secret": ""}


# -- set -----------------------------------------------------------------------------------------


def test_set_is_all_or_nothing(dm: DataModel) -> None:
    dm.set({f"{T}Level": "5"})
    with pytest.raises(Fault) as info:
        dm.set({f"{T}Level": "7", f"{T}Mode": "Fast", f"{T}Load": "101", f"{T}Big": "x"})
    assert {d.code for d in info.value.details} == {FaultCode.INVALID_VALUE, FaultCode.INVALID_TYPE}
    assert len(info.value.details) == 2
    assert dm.value(f"{T}Level") == 5 and dm.value(f"{T}Mode") == ""


def test_allow_partial_applies_what_is_valid(dm: DataModel) -> None:
    result = dm.set({f"{T}Level": "7", f"{T}Load": "101"}, allow_partial=True)
    assert dm.value(f"{T}Level") == 7
    assert [e.path for e in result.errors] == [f"{T}Load"]
    assert result.errors[0].fault.code is FaultCode.INVALID_VALUE


def test_set_faults(dm: DataModel) -> None:
    items(dm, "a")
    assert code(lambda: dm.set({f"{T}Busy": "true"})) is FaultCode.NOT_WRITABLE
    assert code(lambda: dm.set({f"{T}Item.1.Alias": "x"})) is FaultCode.NOT_WRITABLE  # writeOnceReadOnly
    assert code(lambda: dm.set({f"{T}Item.1.Id": "x"})) is FaultCode.NOT_WRITABLE
    assert code(lambda: dm.set({f"{T}Mode": "Gone"})) is FaultCode.INVALID_VALUE  # obsoleted value
    assert code(lambda: dm.set({f"{T}Item.7.Name": "x"})) is FaultCode.OBJECT_NOT_FOUND
    assert code(lambda: dm.set({f"{T}Item.1.": "x"})) is FaultCode.INVALID_PATH
    assert code(lambda: dm.set({f"{T}Item.1.Weight": 1.5})) is FaultCode.INVALID_TYPE
    dm.set({f"{T}Mode": "Old"})  # deprecated values stay valid


def test_set_through_search_path_is_holistic(dm: DataModel) -> None:
    items(dm, "a", "b")
    dm.set({f"{T}Item.*.Weight": "3"})
    assert [dm.value(f"{T}Item.{n}.Weight") for n in (1, 2)] == [3, 3]
    assert code(lambda: dm.set({f"{T}Item.*.Name": "same"})) is FaultCode.DUPLICATE_KEY
    assert [dm.value(f"{T}Item.{n}.Name") for n in (1, 2)] == ["a", "b"]


def test_appliers_run_after_commit_and_roll_back_on_fault(dm: DataModel) -> None:
    seen: list[tuple[int, int]] = []

    def apply(node, old, new):  # type: ignore[no-untyped-def]
        if new == 9:
            raise Fault(FaultCode.VALUE_CONFLICT, "nine is refused")
        seen.append((old, new))

    dm.on_set(f"{T}Level", validate=lambda node, value: None, apply=apply)
    dm.set({f"{T}Level": "3"})
    assert seen == [(0, 3)]
    assert code(lambda: dm.set({f"{T}Level": "9", f"{T}Big": "5"})) is FaultCode.VALUE_CONFLICT
    assert dm.value(f"{T}Level") == 3 and dm.value(f"{T}Big") == 0


def test_validators_refuse(dm: DataModel) -> None:
    def no_slow(node, value):  # type: ignore[no-untyped-def]
        if value == "Slow":
            raise Fault(FaultCode.VALUE_CONFLICT, "not now")

    dm.on_set(f"{T}Mode", validate=no_slow)
    assert code(lambda: dm.set({f"{T}Mode": "Slow"})) is FaultCode.VALUE_CONFLICT


# -- add / delete / numbering / keys --------------------------------------------------------------


def test_add_numbers_are_never_reused_and_counts_follow(dm: DataModel) -> None:
    _a, b = items(dm, "a", "b")
    dm.delete([b])
    (c,) = items(dm, "c")
    assert c == f"{T}Item.3."
    assert dm.value(f"{T}ItemNumberOfEntries") == 2
    assert dm.get_values([f"{c}Alias"]) == {f"{c}Alias": "cpe-3"}


def test_add_with_alias_and_keys(dm: DataModel) -> None:
    result = dm.add(f"{T}Item.", {"Alias": "kitchen", "Name": "k", "Enable": "true"})[0]
    assert result.unique_keys == {"Alias": "kitchen", "Name": "k"}
    assert code(lambda: dm.add(f"{T}Item.", {"Alias": "kitchen", "Name": "other"})) is FaultCode.DUPLICATE_KEY
    assert code(lambda: dm.add(f"{T}Item.", {"Alias": "9lives"})) is FaultCode.INVALID_VALUE
    assert code(lambda: dm.add(f"{T}Item.", {"Id": "x"})) is FaultCode.NOT_WRITABLE
    assert code(lambda: dm.add(f"{T}Item.", {"Nope": "x"})) is FaultCode.UNSUPPORTED_PARAMETER
    assert code(lambda: dm.add(f"{T}Group.")) is FaultCode.NOT_CREATABLE
    assert code(lambda: dm.add(f"{T}")) is FaultCode.NOT_A_TABLE
    assert dm.value(f"{T}ItemNumberOfEntries") == 1  # failed adds leave nothing


def test_agent_alias_avoids_controller_alias(dm: DataModel) -> None:
    dm.add(f"{T}Item.", {"Alias": "cpe-2", "Name": "x"})
    second = dm.add(f"{T}Item.", {"Name": "y"})[0]
    assert second.unique_keys["Alias"] == "cpe-2-1"


def test_functional_keys_bind_enabled_rows_only(dm: DataModel) -> None:
    items(dm, "same", enable=False)
    items(dm, "same", enable=False)  # both disabled: allowed
    assert code(lambda: dm.set({f"{T}Item.*.Enable": "true"})) is FaultCode.DUPLICATE_KEY
    dm.set({f"{T}Item.1.Enable": "true"})
    assert code(lambda: dm.set({f"{T}Item.2.Enable": "true"})) is FaultCode.DUPLICATE_KEY


def test_find_key_looks_rows_up_only_where_the_index_holds_every_row(dm: DataModel) -> None:
    """Alias binds every row: found. Name is a functional key of a table with Enable, so a
    disabled row is not in its index: no answer from the index (a caller scans instead)."""
    items(dm, "on")
    items(dm, "off", enable=False)
    table = dm.table(f"{T}Item.")
    assert (row := table.find_key("Alias", "cpe-2")) is not None and row.path == f"{T}Item.2."
    assert table.find_key("Alias", "nobody") is None
    assert table.find_key("Name", "on") is None and table.find_key("Name", "off") is None
    assert table.find_key("Weight", 7) is None  # not a unique key


def test_max_entries(dm: DataModel) -> None:
    items(dm, "a", "b", "c", "d")
    assert code(lambda: items(dm, "e")) is FaultCode.RESOURCES_EXCEEDED


def test_delete_rules(dm: DataModel) -> None:
    (a,) = items(dm, "a")
    assert code(lambda: dm.delete([f"{T}Item.9."])) is FaultCode.OBJECT_NOT_FOUND
    assert code(lambda: dm.delete([T])) is FaultCode.NOT_A_TABLE
    group = dm.add_row(f"{T}Group.", {"Title": "g"})
    assert code(lambda: dm.delete([group.path])) is FaultCode.DELETE_FAILURE
    assert dm.delete([f'{T}Item.[Name=="none"].'])[0].deleted == []  # R-DEL.2a
    assert dm.delete([f"{T}Item.*."])[0].deleted == [a]


def test_internal_rows_and_updates(dm: DataModel) -> None:
    group = dm.add_row(f"{T}Group.", {"Title": "g"})
    assert group.path == f"{T}Group.1." and dm.value(f"{T}GroupNumberOfEntries") == 1
    dm.update(group, {"Title": "h"})  # read-only for controllers, writable for the product
    assert dm.value(f"{group.path}Title") == "h"
    assert code(lambda: dm.update(group, {"Title": 5})) is FaultCode.INVALID_TYPE
    restored = dm.add_row(f"{T}Group.", {"Title": "r"}, number=7)
    assert restored.path == f"{T}Group.7."
    assert dm.add_row(f"{T}Group.").path == f"{T}Group.8."
    assert code(lambda: dm.add_row(f"{T}Group.", number=7)) is FaultCode.OBJECT_NOT_CREATED


# -- references ------------------------------------------------------------------------------------


def test_strong_references_must_exist_and_are_cleared_on_delete(dm: DataModel) -> None:
    group = dm.add_row(f"{T}Group.")
    a, b = items(dm, "a", "b")
    assert code(lambda: dm.set({f"{T}Owner": f"{T}Group.5"})) is FaultCode.INVALID_VALUE
    assert code(lambda: dm.set({f"{T}Owner": f"{T}Item.1"})) is FaultCode.INVALID_VALUE  # wrong table
    dm.set({f"{T}Owner": f"{T}Group.[cpe-1].", f"{T}Members": f"{a},{b}", f"{T}LastSeen": f"{T}Item.2"})
    dm.set({f"{T}Related": f"{group.ref},{a},{b}"})  # rows of any table
    assert dm.value(f"{T}Owner") == group.ref  # canonical: instance numbers, no dot
    changes: list[Notification] = []
    dm.subscribe(changes.append, {Kind.VALUE_CHANGE, Kind.OBJECT_DELETION})
    dm.delete([b])
    assert dm.value(f"{T}Members") == (a[:-1],)  # list item removed
    assert dm.value(f"{T}Related") == (group.ref, a[:-1])
    assert dm.value(f"{T}LastSeen") == f"{T}Item.2"  # weak reference untouched
    assert dm.value(f"{T}Owner") == group.ref  # names a row of another table
    dm.delete_row(group)
    assert dm.value(f"{T}Owner") == ""
    assert dm.value(f"{T}Related") == (a[:-1],)
    assert dm.value(f"{T}Members") == (a[:-1],)
    kinds = [(n.kind, n.path) for n in changes]
    assert (Kind.OBJECT_DELETION, b) in kinds and (Kind.VALUE_CHANGE, f"{T}Members") in kinds


def test_weak_reference_to_a_missing_row_is_accepted(dm: DataModel) -> None:
    dm.set({f"{T}LastSeen": f"{T}Item.42"})
    assert dm.value(f"{T}LastSeen") == f"{T}Item.42"


# -- notifications ----------------------------------------------------------------------------------


def test_notifications_for_creation_deletion_change_and_events(dm: DataModel) -> None:
    seen: list[Notification] = []
    dm.subscribe(seen.append)
    (a,) = items(dm, "a")
    dm.set({f"{a}Weight": "8"})
    dm.emit_event(f"{T}Happened!", {"What": "x", "Detail.Code": 4})
    dm.delete([a])
    kinds = [n.kind for n in seen]
    assert kinds[0] is Kind.OBJECT_CREATION and seen[0].args == {"Alias": "cpe-1", "Name": "a"}
    assert Kind.VALUE_CHANGE in kinds
    event = next(n for n in seen if n.kind is Kind.EVENT)
    assert event.args["Detail.Code"] == 4 and event.args["Ref"] == ""
    assert seen[-2].kind is Kind.OBJECT_DELETION and seen[-1].path == f"{T}ItemNumberOfEntries"
    with pytest.raises(Fault):
        dm.emit_event(f"{T}Happened!", {"Nope": 1})


def test_a_failing_subscriber_does_not_stop_others(dm: DataModel) -> None:
    seen: list[str] = []
    dm.subscribe(lambda n: 1 / 0)
    dm.subscribe(lambda n: seen.append(n.path))
    dm.set({f"{T}Level": "1"})
    assert seen == [f"{T}Level"]


# -- operate --------------------------------------------------------------------------------------


def test_sync_command_arguments(dm: DataModel) -> None:
    calls: list[CommandCall] = []

    def add(call: CommandCall) -> dict[str, int]:
        calls.append(call)
        return {"Sum": call.args["A"] + call.args["B"] + sum(r["Weight"] for r in call.rows("Row."))}

    dm.on_command(f"{T}Add()", add)
    result = dm.operate_one(f"{T}Add()", {"A": "2", "Unknown": "ignored", "Row.1.Name": "x", "Row.2.Name": "y"})
    assert result.outputs == {"Sum": 2 + 5 + 2}  # B and Row.{i}.Weight defaulted
    assert "Unknown" not in calls[0].args
    assert [r["Name"] for r in calls[0].rows("Row.")] == ["x", "y"]
    assert "Extra.C" not in calls[0].args  # a sub-object not given needs none of its arguments
    faults = {
        "missing mandatory": {},
        "bad type": {"A": "x"},
        "mandatory in a table row": {"A": "1", "Row.1.Weight": "3"},
    }
    for why, args in faults.items():
        fault = dm.operate(f"{T}Add()", args)[0].fault
        assert fault is not None and fault.code is FaultCode.INVALID_COMMAND_ARGUMENTS, why


def test_command_failures_are_results_not_exceptions(dm: DataModel) -> None:
    assert dm.operate(f"{T}Slow()")[0].fault.code is FaultCode.COMMAND_FAILURE  # no handler
    dm.on_command(f"{T}Add()", lambda call: (_ for _ in ()).throw(RuntimeError("boom")))
    fault = dm.operate(f"{T}Add()", {"A": "1"})[0].fault
    assert fault.code is FaultCode.INTERNAL_ERROR and "boom" not in fault.message
    assert code(lambda: dm.operate(f"{T}Nope()")) is FaultCode.INVALID_PATH
    assert code(lambda: dm.operate(f"{T}Level")) is FaultCode.INVALID_PATH
    assert code(lambda: dm.operate(f"{T}Item.3.Nope()")) is FaultCode.OBJECT_NOT_FOUND


def test_async_command_completes_later_with_notification() -> None:
    from dsm_tr181.schema.loader import load_documents
    from tests.unit.conftest import TEST_MODEL

    dm = DataModel(load_documents([TEST_MODEL]))

    async def slow(call: CommandCall) -> dict[str, bool]:
        await asyncio.sleep(call.args["Delay"] / 1000)
        if call.args["Delay"] == 13:
            raise Fault(FaultCode.COMMAND_FAILURE, "unlucky")
        return {"Done": True}

    dm.on_command(f"{T}Slow()", slow)
    done: list[Notification] = []
    dm.subscribe(done.append, {Kind.OPERATION_COMPLETE})

    async def scenario() -> None:
        ok = dm.operate_one(f"{T}Slow()", {"Delay": "5"}, command_key="k1")
        bad = dm.operate_one(f"{T}Slow()", {"Delay": "13"})
        assert ok.request and bad.request and ok.request.id != bad.request.id
        assert set(dm.requests) == {ok.request.id, bad.request.id}
        assert await ok.request.future == {"Done": True}
        with pytest.raises(Fault):
            await bad.request.future
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert dm.requests == {}
    by_key = {n.command_key: n for n in done}
    assert by_key["k1"].args == {"Done": True} and by_key["k1"].fault is None
    assert by_key[""].fault.code is FaultCode.COMMAND_FAILURE


# -- get_instances / supported dm --------------------------------------------------------------------


def test_get_instances(dm: DataModel) -> None:
    items(dm, "a", "b")
    dm.add_row(f"{T}Group.")
    found = dm.get_instances([f"{T}Item.", f"{T}Group."])
    assert [f.path for f in found] == [f"{T}Item.1.", f"{T}Item.2.", f"{T}Group.1."]
    # TR-369 error codes: 7018 "Object is not a table" (Add, GetInstances)
    assert code(lambda: dm.get_instances(["Device."])) is FaultCode.NOT_A_TABLE
    assert found[0].unique_keys == {"Alias": "cpe-1", "Name": "a"}
    assert [f.path for f in dm.get_instances([f"{T}Item."], first_level_only=True)] == [f"{T}Item.1.", f"{T}Item.2."]


def test_supported_dm(dm: DataModel) -> None:
    answer = dm.get_supported_dm([T], first_level_only=True)[T]
    assert [o.path for o in answer] == [T, f"{T}Item.{{i}}.", f"{T}Group.{{i}}."]
    test, item, group = answer
    assert item.access == "OBJ_ADD_DELETE" and group.access == "OBJ_READ_ONLY" and item.is_multi_instance
    # TR-369 GetSupportedDM first_level_only: child objects without their parameters, commands, events
    assert (item.params, item.commands, item.events) == ([], [], [])
    assert {c.name: c.command_type for c in test.commands} == {"Add()": "CMD_SYNC", "Slow()": "CMD_ASYNC"}
    add = next(c for c in test.commands if c.name == "Add()")
    assert [a.name for a in add.input_args][:3] == ["A", "B", "Token"]
    params = {p.name: (p.access, p.value_type) for p in test.params}
    assert params["When"] == ("PARAM_READ_WRITE", "PARAM_DATE_TIME") and params["Busy"][0] == "PARAM_READ_ONLY"
    assert item.unique_key_sets == [["Alias"], ["Name"]]
    only = dm.get_supported_dm([f"{T}Slow()"])[f"{T}Slow()"]
    assert [c.name for c in only[0].commands] == ["Slow()"] and only[0].params == []
    assert code(lambda: dm.get_supported_dm([f"{T}Nope."])) is FaultCode.INVALID_PATH


def test_computed_values(dm: DataModel) -> None:
    (a,) = items(dm, "a")
    dm.on_get(f"{T}Item.{{i}}.Stats.Hits", lambda node: 42)
    dm.on_get(f"{T}When", lambda node: datetime(2020, 1, 1, tzinfo=UTC))
    assert dm.get_values([f"{a}Stats.Hits"]) == {f"{a}Stats.Hits": 42}
    assert dm.get_values([f"{T}"])[f"{T}When"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert list(dm.get_values([f"{T}Item.[Stats.Hits==42].Name"]).values()) == ["a"]


def test_parameter_definitions_by_concrete_path(dm: DataModel) -> None:
    assert dm.parameter(f"{T}Item.3.Weight").name == "Weight"
    assert dm.parameter(f"{T}Add().Row.2.Weight").default == "1"
    assert dm.parameter(f"{T}Add().Sum").name == "Sum"
    assert dm.parameter(f"{T}Happened!.Detail.Code").type.base.value == "unsignedInt"
    assert dm.text(f"{T}Item.1.Enable", True) == "true"
    for bad in (f"{T}Nope", f"{T}Add().Nope", f"{T}Nope!.X"):
        assert code(lambda bad=bad: dm.parameter(bad)) is FaultCode.INVALID_PATH


def test_supported_dm_accepts_a_table_named_without_placeholder(dm: DataModel) -> None:
    answer = dm.get_supported_dm([f"{T}Item."])[f"{T}Item."]
    assert [o.path for o in answer] == [f"{T}Item.{{i}}.", f"{T}Item.{{i}}.Stats."]


def test_events_carry_the_request_they_conclude(dm: DataModel) -> None:
    seen: list[Notification] = []
    dm.subscribe(seen.append, {Kind.EVENT})
    dm.emit_event(f"{T}Happened!", {"What": "x"}, request_id="7")
    assert seen[0].request_id == "7"


def test_a_subscription_cancelled_during_a_publish_is_not_called_and_lets_go_of_its_callback() -> None:
    bus = Notifications()
    seen: list[str] = []
    later: list[Subscription] = []

    def first(note: Notification) -> None:
        seen.append("first")
        later[0].cancel()

    bus.subscribe(first)
    later.append(bus.subscribe(lambda note: seen.append("second")))
    callback = later[0].callback
    bus.publish(Notification(Kind.VALUE_CHANGE, "Device.X", value="1"))
    assert seen == ["first"]
    assert later[0].callback is not callback  # its closure (often holding the subscription) is let go
