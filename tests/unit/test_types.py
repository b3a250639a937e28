"""TR-106 type system: every base type, every facet, the boundaries."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.types import (
    UNKNOWN_TIME,
    BaseType,
    DataType,
    ListFacet,
    Range,
    Size,
    format_datetime,
    parse_datetime,
)

pytestmark = pytest.mark.unit


def fault_code(dtype: DataType, text: str) -> FaultCode:
    with pytest.raises(Fault) as info:
        dtype.parse(text)
    return info.value.code


@pytest.mark.parametrize(
    ("base", "low", "high"),
    [
        (BaseType.INT, -(2**31), 2**31 - 1),
        (BaseType.UNSIGNED_INT, 0, 2**32 - 1),
        (BaseType.LONG, -(2**63), 2**63 - 1),
        (BaseType.UNSIGNED_LONG, 0, 2**64 - 1),
    ],
)
def test_integer_bounds(base: BaseType, low: int, high: int) -> None:
    dtype = DataType(base)
    assert dtype.parse(str(low)) == low
    assert dtype.parse(str(high)) == high
    assert fault_code(dtype, str(low - 1)) is FaultCode.INVALID_VALUE
    assert fault_code(dtype, str(high + 1)) is FaultCode.INVALID_VALUE
    assert fault_code(dtype, "12a") is FaultCode.INVALID_TYPE
    assert fault_code(dtype, "") is FaultCode.INVALID_TYPE
    assert fault_code(dtype, "1.5") is FaultCode.INVALID_TYPE
    assert dtype.parse("+7") == 7 and dtype.parse("007") == 7


def test_ranges_with_several_intervals_and_step() -> None:
    dtype = DataType(BaseType.INT, ranges=(Range(-10, 10), Range(100, 200, 10)))
    for ok in ("-10", "0", "10", "100", "150", "200"):
        assert dtype.parse(ok) == int(ok)
    for bad in ("-11", "11", "99", "105", "210"):
        assert fault_code(dtype, bad) is FaultCode.INVALID_VALUE
    assert "-10..10" in dtype.describe() and "step 10" in dtype.describe()


def test_boolean_literals() -> None:
    dtype = DataType(BaseType.BOOLEAN)
    assert dtype.parse("true") is True and dtype.parse("1") is True
    assert dtype.parse("false") is False and dtype.parse("0") is False
    for bad in ("True", "yes", "2", ""):
        assert fault_code(dtype, bad) is FaultCode.INVALID_TYPE
    assert dtype.format(True) == "true" and dtype.format(False) == "false"


def test_string_sizes_enumerations_patterns() -> None:
    sized = DataType(BaseType.STRING, sizes=(Size(2, 4),))
    assert sized.parse("ab") == "ab" and sized.parse("abcd") == "abcd"
    assert fault_code(sized, "a") is FaultCode.INVALID_VALUE
    assert fault_code(sized, "abcde") is FaultCode.INVALID_VALUE
    enum = DataType(BaseType.STRING, enumerations=("Idle", "Active"))
    assert enum.parse("Idle") == "Idle"
    assert fault_code(enum, "idle") is FaultCode.INVALID_VALUE
    pattern = DataType(BaseType.STRING, patterns=("", "[0-9]{3}"))
    assert pattern.parse("") == "" and pattern.parse("123") == "123"
    assert fault_code(pattern, "1234") is FaultCode.INVALID_VALUE  # patterns are anchored


def test_uuid_named_type() -> None:
    uuid = DataType(
        BaseType.STRING,
        name="UUID",
        sizes=(Size(36, 36),),
        patterns=("[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}",),
    )
    good = "6ba7b810-9dad-51d1-80b4-00c04fd430c8"
    assert uuid.parse(good) == good
    assert fault_code(uuid, good[:-1] + "g") is FaultCode.INVALID_VALUE
    assert fault_code(uuid, good + "0") is FaultCode.INVALID_VALUE


def test_alias_must_start_with_a_letter() -> None:
    alias = DataType(BaseType.STRING, name="_AliasUSP", sizes=(Size(None, 64),), chain=("_AliasUSP", "_AliasCommon"))
    assert alias.parse("cpe-1") == "cpe-1"
    assert fault_code(alias, "") is FaultCode.INVALID_VALUE
    assert fault_code(alias, "1abc") is FaultCode.INVALID_VALUE
    assert fault_code(alias, "a" * 65) is FaultCode.INVALID_VALUE


def test_datetime_parse_and_format() -> None:
    dtype = DataType(BaseType.DATETIME)
    assert dtype.parse("0001-01-01T00:00:00Z") == UNKNOWN_TIME
    assert dtype.format(UNKNOWN_TIME) == "0001-01-01T00:00:00Z"
    value = dtype.parse("2024-02-29T23:59:59.250+02:00")
    assert value == datetime(2024, 2, 29, 21, 59, 59, 250000, tzinfo=UTC)
    assert dtype.format(value) == "2024-02-29T21:59:59.25Z"
    assert dtype.parse("2021-06-06T08:00:00") == datetime(2021, 6, 6, 8, tzinfo=UTC)  # no zone: UTC
    assert dtype.format(dtype.parse("9999-12-31T23:59:59Z")) == "9999-12-31T23:59:59Z"
    assert fault_code(dtype, "2023-02-29T00:00:00Z") is FaultCode.INVALID_VALUE
    assert fault_code(dtype, "2023-13-01T00:00:00Z") is FaultCode.INVALID_VALUE
    assert fault_code(dtype, "yesterday") is FaultCode.INVALID_TYPE
    assert fault_code(dtype, "2023-01-01 00:00:00Z") is FaultCode.INVALID_TYPE
    local = datetime(2020, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert format_datetime(local) == "2020-01-01T17:00:00Z"
    assert parse_datetime(format_datetime(local)) == local


def test_base64_and_hexbinary_sizes_count_bytes() -> None:
    b64 = DataType(BaseType.BASE64, sizes=(Size(None, 4),))
    assert b64.parse("AAECAw==") == b"\x00\x01\x02\x03"
    assert fault_code(b64, "AAECAwQ=") is FaultCode.INVALID_VALUE  # 5 bytes
    assert fault_code(b64, "A") is FaultCode.INVALID_TYPE
    assert fault_code(b64, "!!!!") is FaultCode.INVALID_TYPE
    assert b64.format(b"\x00\x01\x02\x03") == "AAECAw=="
    hexb = DataType(BaseType.HEX_BINARY, sizes=(Size(2, 2),))
    assert hexb.parse("0aFF") == b"\x0a\xff" and hexb.format(b"\x0a\xff") == "0aff"
    assert fault_code(hexb, "0a") is FaultCode.INVALID_VALUE
    assert fault_code(hexb, "0aF") is FaultCode.INVALID_TYPE


def test_lists_item_and_whole_facets() -> None:
    dtype = DataType(
        BaseType.UNSIGNED_INT,
        ranges=(Range(None, 9),),
        list=ListFacet(min_items=1, max_items=3, sizes=(Size(None, 7),)),
    )
    assert dtype.parse("1, 2,3") == (1, 2, 3)
    assert dtype.format((1, 2, 3)) == "1,2,3"
    assert fault_code(dtype, "") is FaultCode.INVALID_VALUE  # fewer than minItems
    assert fault_code(dtype, "1,2,3,4") is FaultCode.INVALID_VALUE  # more than maxItems (and longer than 7)
    assert fault_code(dtype, "1,10") is FaultCode.INVALID_VALUE  # item out of range
    assert fault_code(dtype, "1,x") is FaultCode.INVALID_TYPE
    empty_ok = DataType(BaseType.STRING, list=ListFacet())
    assert empty_ok.parse("") == () and empty_ok.default_value() == ()


def test_check_accepts_typed_values_and_refuses_wrong_ones() -> None:
    assert DataType(BaseType.INT).check(5) == 5
    assert DataType(BaseType.INT).check("5") == 5
    with pytest.raises(Fault) as info:
        DataType(BaseType.INT).check(True)
    assert info.value.code is FaultCode.INVALID_TYPE
    naive = datetime(2020, 1, 1)
    assert DataType(BaseType.DATETIME).check(naive).tzinfo is UTC
    assert DataType(BaseType.STRING, list=ListFacet()).check(["a", "b"]) == ("a", "b")


def test_defaults_are_type_empty_values() -> None:
    assert DataType(BaseType.STRING).default_value() == ""
    assert DataType(BaseType.INT, ranges=(Range(-1, None),)).default_value() == 0
    assert DataType(BaseType.UNSIGNED_INT, ranges=(Range(5, 9),)).default_value() == 5
    assert DataType(BaseType.DATETIME).default_value() == UNKNOWN_TIME
    assert DataType(BaseType.BOOLEAN).default_value() is False


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(Fault) as info:
        DataType(BaseType.UNSIGNED_INT, ranges=(Range(None, 65535),)).parse("70000")
    assert "70000" in info.value.message and "65535" in info.value.message
