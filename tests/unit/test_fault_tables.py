"""The fault vocabulary by property, not by a second copy of its tables: every FaultCode has a
USP and a CWMP number the standards define (read from the BBF extract in tests/conformance/bbf),
and every bus's translation carries it so that the controller gets the same fault back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsm_tr181.buses import dbus_errors, rbus_ffi
from dsm_tr181.buses.control_socket import _fault_json
from dsm_tr181.control_client import DaemonError
from dsm_tr181.errors import Fault, FaultCode

pytestmark = pytest.mark.unit

BBF = json.loads((Path(__file__).parents[1] / "conformance/bbf/softwaremodules.json").read_text())["fault_codes"]
USP_CODES = {int(e["code"]): e["name"] for e in BBF["usp_error_codes_TR369"] if e["code"].isdigit()}
USP_RANGES = [tuple(map(int, e["code"].split("-"))) for e in BBF["usp_error_codes_TR369"] if "-" in e["code"]]
DU_STATE_CHANGE = {int(code): name for code, name in BBF["usp_DUStateChange_FaultCode"].items()}
# The code that is the standard's own for its USP number (later members reuse numbers for
# CWMP faults USP has no number of its own for).
CANONICAL = {code.usp: code for code in reversed(FaultCode)}

faults = st.builds(
    Fault,
    st.sampled_from(FaultCode),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.one_of(st.just(""), st.from_regex(r"Device(\.[A-Z][A-Za-z]{0,8}|\.[1-9][0-9]?){1,4}\.?", fullmatch=True)),
)


@pytest.mark.parametrize("code", list(FaultCode), ids=lambda code: code.name)
def test_every_fault_has_numbers_the_standards_define(code: FaultCode) -> None:
    listed = code.usp in USP_CODES or code.usp in DU_STATE_CHANGE
    assert listed or any(low <= code.usp <= high for low, high in USP_RANGES), code
    assert 9000 <= code.cwmp <= 9099, code  # TR-069 A.5: standard CWMP faults (vendor ones are 9800+)
    if CANONICAL[code.usp] is code and code.usp in (DU_STATE_CHANGE | USP_CODES):
        standard = DU_STATE_CHANGE.get(code.usp) or USP_CODES[code.usp]
        assert standard.lower().startswith(code.title.lower()), (code, standard)


def test_the_cwmp_usp_pairs_the_standards_name_alike_are_kept() -> None:
    pairs = {(code.usp, code.cwmp) for code in FaultCode}
    for pair in BBF["cwmp_usp_name_matches"]:
        assert (int(pair["usp"]), int(pair["cwmp"])) in pairs, pair


@given(faults)
def test_dbus_carries_the_fault_by_name_and_number(fault: Fault) -> None:
    name = dbus_errors.error_name(fault.code)
    names = {dbus_errors.error_name(code): code for code in FaultCode}
    assert len(names) == len(FaultCode)  # the name alone gives the fault back
    assert names[name] is fault.code
    text = dbus_errors.fault_text(fault)
    assert text.startswith(f"{fault.code.usp} {fault.code.title}")
    match = re.match(r"(\d{4}) ", text)
    assert match is not None and int(match[1]) == fault.code.usp


@pytest.mark.parametrize("code", [code for usp, code in CANONICAL.items() if usp < 7100], ids=lambda c: c.name)
def test_dbus_names_of_the_usp_faults_are_their_names(code: FaultCode) -> None:
    camel = "".join(word.capitalize() for word in code.name.split("_"))
    assert dbus_errors.ERROR_NAMES[code] == camel


@given(faults)
def test_the_control_socket_carries_both_numbers(fault: Fault) -> None:
    sent = json.loads(json.dumps({"error": fault.describe(), "fault": _fault_json(fault)}))
    received = DaemonError(sent["error"], sent["fault"], sent)
    assert received.fault is not None
    assert (received.fault["code"], received.fault["cwmp_code"]) == (fault.code.usp, fault.code.cwmp)
    assert received.fault["path"] == fault.path and received.fault["message"] == fault.message


@given(faults)
def test_rbus_carries_a_failure_code_and_the_usp_number_in_its_text(fault: Fault) -> None:
    code = rbus_ffi.rbus_error_for(fault)
    assert code not in (rbus_ffi.RbusError.SUCCESS, rbus_ffi.RbusError.ASYNC_RESPONSE, rbus_ffi.RbusError.NOSUBSCRIBERS)
    error, outputs = rbus_ffi._error_outputs(fault)
    assert error is code and outputs["error_code"] == (int(code), "int")
    text, kind = outputs["error_string"]
    assert kind == "string"
    assert f"({fault.code.usp} {fault.code.title})" in text  # what RDK's USP agent reads back


@pytest.mark.parametrize("code", list(FaultCode), ids=lambda code: code.name)
def test_rbus_codes_keep_the_kind_of_failure(code: FaultCode) -> None:
    """A fault about a name that does not exist, a type, a value or writability keeps that meaning."""
    rbus = rbus_ffi.rbus_error_for(Fault(code, "x"))
    kind = {
        FaultCode.INVALID_TYPE: rbus_ffi.RbusError.INVALID_PARAMETER_TYPE,
        FaultCode.NOT_WRITABLE: rbus_ffi.RbusError.NOT_WRITABLE,
    }
    if code in kind:
        assert rbus is kind[code]
    if code.usp in (FaultCode.INVALID_PATH.usp, FaultCode.OBJECT_NOT_FOUND.usp, FaultCode.UNSUPPORTED_PARAMETER.usp):
        assert rbus is rbus_ffi.RbusError.ELEMENT_DOES_NOT_EXIST
    if code is FaultCode.INTERNAL_ERROR:
        assert rbus is rbus_ffi.RbusError.BUS_ERROR
