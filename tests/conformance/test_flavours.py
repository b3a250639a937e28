"""The USP and CWMP flavours (dsm_tr181/schema/flavours.py) against the BBF documents, and what rbus
registers for each value of ``[bus.rbus] flavour``.

librbus is not needed: the provider's element list is what it hands librbus to register
(tests/integration/test_rbus_provider.py registers it with a real librbus when one is present).
The USP front ends (D-Bus, control socket) are checked on the wire in test_usp_semantics_dbus.py
and test_wire_dbus.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.buses import rbus as rbus_provider
from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.loop_bridge import LoopBridge
from dsm_tr181.buses.rbus import RbusConfig, RbusProvider
from dsm_tr181.buses.rbus_ffi import HandlerActivity
from dsm_tr181.buses.rbus_methods import Methods
from dsm_tr181.buses.rbus_outbox import Outbox
from dsm_tr181.buses.rbus_valuechange import ValueChanges
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema import Schema
from dsm_tr181.schema.flavours import CWMP_ONLY, USP_ONLY, Flavour
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.tree.notifications import Kind
from tests.conformance.bbf_reference import DataModelDocument
from tests.conformance.test_served_model import VENDOR_PREFIX

pytestmark = pytest.mark.conformance

SM = "Device.SoftwareModules."
EU = SM + "ExecutionUnit."
USP_PA_PARAMS = Path(__file__).resolve().parents[2] / "integration" / "usp-pa" / "usp_dm_params.conf"


def _parameters(doc: DataModelDocument) -> set[str]:
    return {path + name for path in doc.object_paths() if path.startswith(SM) for name in doc.object(path).parameters}


def test_the_flavour_lists_are_what_the_bbf_flavours_differ_in(usp: DataModelDocument, cwmp: DataModelDocument) -> None:
    assert _parameters(cwmp) - _parameters(usp) == CWMP_ONLY
    assert _parameters(usp) - _parameters(cwmp) == USP_ONLY


def test_the_usp_agent_configuration_lists_no_cwmp_only_parameter() -> None:
    listed = {line.split()[0] for line in USP_PA_PARAMS.read_text().splitlines() if line and not line.startswith("#")}
    assert listed and not listed & CWMP_ONLY


def test_rbus_flavour_defaults_to_both_and_takes_only_the_three_values() -> None:
    assert RbusConfig.from_config({}).flavour == "both"
    assert {RbusConfig.from_config({"flavour": f.value}).flavour for f in Flavour} == {"usp", "cwmp", "both"}
    with pytest.raises(ValueError, match=r"^bus\.rbus\.flavour: 'tr069' is not one of usp, cwmp, both"):
        RbusConfig.from_config({"flavour": "tr069"})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The daemon's loop in a background thread; the test acts as rbus's threads."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


class _NoHandle:
    """The provider builds its element list without touching the handle."""


def _registered(provider: RbusProvider, loop: asyncio.AbstractEventLoop) -> dict[str, rbus_ffi.Element]:
    connection = rbus_provider._Connection(
        _NoHandle(),  # type: ignore[arg-type]
        HandlerActivity(),
        Outbox(_NoHandle(), "dsm-tr181"),  # type: ignore[arg-type]
        Methods(provider.dm, LoopBridge(loop, 5), lambda action: None),
        ValueChanges(provider.dm, loop, lambda name, data: None),
    )
    return {element.name: element for element in provider._elements(connection)}


@pytest.mark.parametrize("flavour", ["usp", "cwmp", "both"])
def test_rbus_registers_the_parameters_of_the_configured_flavour(
    flavour: str, schema: Schema, usp: DataModelDocument, cwmp: DataModelDocument, loop: asyncio.AbstractEventLoop
) -> None:
    dm = DataModel(schema)
    elements = _registered(RbusProvider.create(dm, {"flavour": flavour}, loop), loop)
    properties = {n for n, e in elements.items() if isinstance(e, rbus_ffi.Property) and n.startswith(SM)}
    standard = {n for n in properties if VENDOR_PREFIX not in n}
    every = {o.path + n for o in schema.objects.values() if o.path.startswith(SM) for n in o.parameters}
    assert (
        standard
        == {n for n in every if VENDOR_PREFIX not in n}
        & {"usp": _parameters(usp), "cwmp": _parameters(cwmp), "both": _parameters(usp) | _parameters(cwmp)}[flavour]
    )
    assert bool(properties & CWMP_ONLY) == (flavour != "usp") and bool(properties & USP_ONLY) == (flavour != "cwmp")
    # commands and events in every flavour: the TR-069 agent carries out ChangeDUState with them
    assert {SM + "InstallDU()", EU + "{i}.SetRequestedState()", SM + "DUStateChange!"} <= set(elements)


def test_an_rbus_set_of_a_parameter_the_flavour_lacks_is_7026(schema: Schema, loop: asyncio.AbstractEventLoop) -> None:
    dm = DataModel(schema)  # rows made before the loop serves it
    ee = dm.add_row(SM + "ExecEnv.", {"Name": "default"})
    eu = dm.add_row(EU, {"EUID": "eu-1", "ExecutionEnvRef": ee.ref})
    lacking = {"usp": {eu.path + "RequestedState": "Active"}, "cwmp": {ee.path + "Signers": ""}}
    for flavour, values in lacking.items():
        with pytest.raises(Fault) as refused:
            RbusProvider.create(dm, {"flavour": flavour}, loop)._apply_set(values)
        assert refused.value.code is FaultCode.INVALID_PATH, flavour
    both = RbusProvider.create(dm, {"flavour": "both"}, loop)
    both._apply_set(lacking["usp"] | lacking["cwmp"])  # both flavours: both accepted


def test_a_view_tells_its_subscribers_no_change_of_a_parameter_its_flavour_lacks(schema: Schema) -> None:
    dm = DataModel(schema)
    eu = dm.add_row(EU, {"EUID": "eu-1"})
    seen: dict[str, list[str]] = {"usp": [], "both": []}
    for flavour, paths in seen.items():
        dm.view(Flavour(flavour)).subscribe(lambda note, paths=paths: paths.append(note.path), {Kind.VALUE_CHANGE})
    dm.update(eu, {"RequestedState": "Active", "Status": "Starting"})  # as the LCM records a CWMP request
    assert seen == {"usp": [eu.path + "Status"], "both": [eu.path + "RequestedState", eu.path + "Status"]}
