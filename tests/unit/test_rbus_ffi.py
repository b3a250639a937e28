"""The rbus binding without librbus: imports, generated module, tables, layouts, conversions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from pathlib import Path
from types import ModuleType

import pytest

from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.rbus_ffi import FAULT_TO_RBUS, LAYOUTS, RbusError, ValueType, ffi
from dsm_tr181.errors import AdapterUnavailable, FaultCode
from tests.support.rtrouted import parse_object_dump, parse_rbuscli

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_rbus_cffi", REPO / "bindings" / "build_rbus_cffi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_binding_loads_no_library() -> None:
    probe = (
        "import dsm_tr181, dsm_tr181.buses.rbus_ffi\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'librbus' not in maps and 'librtMessage' not in maps, maps\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO)


def test_generated_module_is_up_to_date() -> None:
    builder = _builder()
    assert builder.generate() == builder.OUTPUT.read_text(), "run: python bindings/build_rbus_cffi.py"


def test_missing_library_is_an_unavailable_adapter(tmp_path: Path) -> None:
    missing = tmp_path / "librbus.so.0"
    with pytest.raises(AdapterUnavailable, match=str(missing)):
        rbus_ffi.load(str(missing))


@pytest.mark.parametrize(
    ("enum", "ctype", "prefix"),
    [
        (RbusError, "rbusError_t", "RBUS_ERROR_"),
        (ValueType, "rbusValueType_t", "RBUS_"),
        (rbus_ffi.ElementType, "rbusElementType_t", "RBUS_ELEMENT_TYPE_"),
        (rbus_ffi.EventType, "rbusEventType_t", "RBUS_EVENT_"),
        (rbus_ffi.SubscribeAction, "rbusEventSubAction_t", "RBUS_EVENT_ACTION_"),
    ],
)
def test_python_enums_match_the_cdef(enum: type[IntEnum], ctype: str, prefix: str) -> None:
    declared = {name.removeprefix(prefix): value for value, name in ffi.typeof(ctype).elements.items()}
    assert {member.name: member.value for member in enum} == declared


def test_every_fault_has_an_rbus_error() -> None:
    assert set(FAULT_TO_RBUS) == set(FaultCode)
    assert all(isinstance(code, RbusError) for code in FAULT_TO_RBUS.values())
    assert RbusError.SUCCESS not in FAULT_TO_RBUS.values()
    assert RbusError.ASYNC_RESPONSE not in FAULT_TO_RBUS.values()


def test_anything_but_a_fault_is_a_bus_error() -> None:
    assert rbus_ffi.rbus_error_for(KeyError("x")) is RbusError.BUS_ERROR


def test_layout_check_accepts_this_binding() -> None:
    rbus_ffi.check_layout()
    assert ffi.sizeof("void *") in LAYOUTS


def test_layout_check_refuses_a_mismatch() -> None:
    pointer = ffi.sizeof("void *")
    wrong = {pointer: {**LAYOUTS[pointer], "rbusDataElement_t": (64, {"name": 0, "type": 8, "cbTable": 8})}}
    with pytest.raises(AdapterUnavailable, match=r"rbusDataElement_t\.cbTable at 16, rbus has 8"):
        rbus_ffi.check_layout(wrong)
    with pytest.raises(AdapterUnavailable, match="no verified struct layout"):
        rbus_ffi.check_layout({})


@pytest.mark.parametrize(
    ("tr106", "expected"),
    [
        ("string", ValueType.STRING),
        ("boolean", ValueType.BOOLEAN),
        ("int", ValueType.INT32),
        ("unsignedInt", ValueType.UINT32),
        ("long", ValueType.INT64),
        ("unsignedLong", ValueType.UINT64),
        ("dateTime", ValueType.DATETIME),
        ("base64", ValueType.STRING),
        ("hexBinary", ValueType.STRING),
        ("decimal", ValueType.STRING),
    ],
)
def test_tr106_types(tr106: str, expected: ValueType) -> None:
    assert rbus_ffi.rbus_type(tr106) is expected


def test_lists_travel_as_strings() -> None:
    assert rbus_ffi.rbus_type("unsignedInt", is_list=True) is ValueType.STRING


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        datetime(2000, 2, 29, 0, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        rbus_ffi.UNKNOWN_TIME,
    ],
)
def test_datetimes_round_trip(moment: datetime) -> None:
    assert rbus_ffi._from_datetime(rbus_ffi._as_datetime(moment)) == moment


def test_datetime_fields_are_rbus_tm_fields() -> None:
    stamp = rbus_ffi._as_datetime("2024-05-01T10:00:30-03:30")
    tm = stamp.m_time
    assert (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) == (124, 4, 1, 10, 0, 30)
    assert (tm.tm_wday, tm.tm_yday) == (3, 121)
    assert (stamp.m_tz.m_tzhour, stamp.m_tz.m_tzmin, stamp.m_tz.m_isWest) == (3, 30, True)


def test_naive_datetime_is_utc_and_rbus_zero_time_is_unknown() -> None:
    assert rbus_ffi._from_datetime(rbus_ffi._as_datetime(datetime(2024, 1, 1))) == datetime(2024, 1, 1, tzinfo=UTC)
    assert rbus_ffi._from_datetime(ffi.new("rbusDateTime_t *")[0]) == rbus_ffi.UNKNOWN_TIME


@pytest.mark.parametrize(
    ("convert", "value"),
    [
        (rbus_ffi._as_int, True),
        (rbus_ffi._as_int, "1"),
        (rbus_ffi._as_bool, 1),
        (rbus_ffi._as_text, 1),
        (rbus_ffi._as_datetime, 1),
    ],
)
def test_python_values_must_have_the_declared_kind(convert: object, value: object) -> None:
    with pytest.raises(TypeError):
        convert(value)  # type: ignore[operator]


# ---- parsing rbuscli output (tests/support/rtrouted.py) ----

GET_OUTPUT = (
    "Parameter  1:\r\n              Name  : Device.X.Name\r\n              Type  : string\r\n"
    "              Value : two words\r\n"
    "Parameter  2:\r\n              Name  : Device.X.Empty\r\n              Type  : string\r\n"
    "              Value : \r\n"
)
METHOD_ERROR_OUTPUT = (
    "method_noargs failed for Device.X.Do() with err: 'invalid input'\r\n rbusObject name=\r\n"
    "  rbusProperty name=error_code\r\n   rbusValue type:RBUS_INT32 value:2\r\n"
    "  rbusProperty name=error_string\r\n   rbusValue type:RBUS_STRING value:In is required (7027 x)\r\n"
)


def test_parse_rbuscli_parameters() -> None:
    result = parse_rbuscli(GET_OUTPUT)
    assert result.error is None
    assert result.values() == {"Device.X.Name": "two words", "Device.X.Empty": ""}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("12:00 RBUS ERROR ...\nFailed to get the data. Error : 5\r\n", 5),
        ("setvalues failed with return value: 29\r\n", 29),
        (METHOD_ERROR_OUTPUT, 2),
    ],
)
def test_parse_rbuscli_errors(text: str, code: int) -> None:
    assert parse_rbuscli(text).error == code


def test_parse_object_dump() -> None:
    assert parse_object_dump(METHOD_ERROR_OUTPUT) == {"error_code": "2", "error_string": "In is required (7027 x)"}
