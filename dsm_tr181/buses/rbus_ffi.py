"""The low-level rbus layer: librbus through cffi, knowing nothing of the data model.

It loads the library (only when asked: importing this module needs no librbus), checks
the struct layouts, converts values between Python and ``rbusValue_t`` by TR-106 type,
turns Python handlers into rbus callbacks that can never report success by accident, and
keeps every callback and buffer alive as long as the handle.

Handlers run on rbus's own threads (one callback thread serves get/set/table/method
requests in turn). They must be thread-safe, quick, and must never call the bus
synchronously for an element of this process: that deadlocks the callback thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final

from dsm_tr181.buses._rbus_cffi import ffi
from dsm_tr181.errors import AdapterUnavailable, Fault, FaultCode

log = logging.getLogger(__name__)

DEFAULT_LIBRARY: Final = "librbus.so.0"
# librbus.so.0 links these; an install without RUNPATH finds them only on
# LD_LIBRARY_PATH or when they are already loaded with RTLD_GLOBAL.
COMPANIONS: Final = ("librtMessage.so.0", "librbuscore.so.0")


class RbusError(IntEnum):
    """``rbusError_t``."""

    SUCCESS = 0
    BUS_ERROR = 1
    INVALID_INPUT = 2
    NOT_INITIALIZED = 3
    OUT_OF_RESOURCES = 4
    DESTINATION_NOT_FOUND = 5
    DESTINATION_NOT_REACHABLE = 6
    DESTINATION_RESPONSE_FAILURE = 7
    INVALID_RESPONSE_FROM_DESTINATION = 8
    INVALID_OPERATION = 9
    INVALID_EVENT = 10
    INVALID_HANDLE = 11
    SESSION_ALREADY_EXIST = 12
    COMPONENT_NAME_DUPLICATE = 13
    ELEMENT_NAME_DUPLICATE = 14
    ELEMENT_NAME_MISSING = 15
    COMPONENT_DOES_NOT_EXIST = 16
    ELEMENT_DOES_NOT_EXIST = 17
    ACCESS_NOT_ALLOWED = 18
    INVALID_CONTEXT = 19
    TIMEOUT = 20
    ASYNC_RESPONSE = 21
    INVALID_METHOD = 22
    NOSUBSCRIBERS = 23
    SUBSCRIPTION_ALREADY_EXIST = 24
    INVALID_NAMESPACE = 25
    DIRECT_CON_NOT_EXIST = 26
    NOT_WRITABLE = 27
    NOT_READABLE = 28
    INVALID_PARAMETER_TYPE = 29
    INVALID_PARAMETER_VALUE = 30


class ValueType(IntEnum):
    """``rbusValueType_t``."""

    BOOLEAN = 0x500
    CHAR = 0x501
    BYTE = 0x502
    INT8 = 0x503
    UINT8 = 0x504
    INT16 = 0x505
    UINT16 = 0x506
    INT32 = 0x507
    UINT32 = 0x508
    INT64 = 0x509
    UINT64 = 0x50A
    SINGLE = 0x50B
    DOUBLE = 0x50C
    DATETIME = 0x50D
    STRING = 0x50E
    BYTES = 0x50F
    PROPERTY = 0x510
    OBJECT = 0x511
    NONE = 0x512


class ElementType(IntEnum):
    """``rbusElementType_t``."""

    PROPERTY = 1
    TABLE = 2
    EVENT = 3
    METHOD = 4


class EventType(IntEnum):
    """``rbusEventType_t``."""

    OBJECT_CREATED = 0
    OBJECT_DELETED = 1
    VALUE_CHANGED = 2
    GENERAL = 3
    INITIAL_VALUE = 4
    INTERVAL = 5
    DURATION_COMPLETE = 6


class SubscribeAction(IntEnum):
    """``rbusEventSubAction_t``."""

    SUBSCRIBE = 0
    UNSUBSCRIBE = 1


# The one translation from the product's faults to rbus error codes. rbus codes are
# coarse; the fault's own text (with its USP number) travels in a method's
# error_string. RDK's USP agent turns INVALID_OPERATION from a command into 7022 and
# INVALID_INPUT into 7004.
FAULT_TO_RBUS: Final[Mapping[FaultCode, RbusError]] = MappingProxyType(
    {
        FaultCode.MESSAGE_FAILED: RbusError.BUS_ERROR,
        FaultCode.MESSAGE_NOT_SUPPORTED: RbusError.INVALID_OPERATION,
        FaultCode.REQUEST_DENIED: RbusError.ACCESS_NOT_ALLOWED,
        FaultCode.INTERNAL_ERROR: RbusError.BUS_ERROR,
        FaultCode.INVALID_ARGUMENTS: RbusError.INVALID_INPUT,
        FaultCode.RESOURCES_EXCEEDED: RbusError.OUT_OF_RESOURCES,
        FaultCode.PERMISSION_DENIED: RbusError.ACCESS_NOT_ALLOWED,
        FaultCode.INVALID_CONFIGURATION: RbusError.BUS_ERROR,
        FaultCode.INVALID_PATH_SYNTAX: RbusError.INVALID_INPUT,
        FaultCode.PARAMETER_ACTION_FAILED: RbusError.BUS_ERROR,
        FaultCode.UNSUPPORTED_PARAMETER: RbusError.ELEMENT_DOES_NOT_EXIST,
        FaultCode.INVALID_TYPE: RbusError.INVALID_PARAMETER_TYPE,
        FaultCode.INVALID_VALUE: RbusError.INVALID_PARAMETER_VALUE,
        FaultCode.NOT_WRITABLE: RbusError.NOT_WRITABLE,
        FaultCode.VALUE_CONFLICT: RbusError.INVALID_PARAMETER_VALUE,
        FaultCode.OPERATION_ERROR: RbusError.BUS_ERROR,
        FaultCode.OBJECT_NOT_FOUND: RbusError.ELEMENT_DOES_NOT_EXIST,
        FaultCode.OBJECT_NOT_CREATED: RbusError.BUS_ERROR,
        FaultCode.NOT_A_TABLE: RbusError.INVALID_OPERATION,
        FaultCode.NOT_CREATABLE: RbusError.INVALID_OPERATION,
        FaultCode.OBJECT_NOT_UPDATED: RbusError.BUS_ERROR,
        FaultCode.REQUIRED_PARAMETER_FAILED: RbusError.INVALID_INPUT,
        FaultCode.COMMAND_FAILURE: RbusError.INVALID_OPERATION,
        FaultCode.COMMAND_CANCELED: RbusError.BUS_ERROR,
        FaultCode.DELETE_FAILURE: RbusError.BUS_ERROR,
        FaultCode.DUPLICATE_KEY: RbusError.INVALID_PARAMETER_VALUE,
        FaultCode.INVALID_PATH: RbusError.ELEMENT_DOES_NOT_EXIST,
        FaultCode.INVALID_COMMAND_ARGUMENTS: RbusError.INVALID_INPUT,
        FaultCode.UNAVAILABLE_ROLE: RbusError.ACCESS_NOT_ALLOWED,
        FaultCode.SERVER_UNREACHABLE: RbusError.BUS_ERROR,
        FaultCode.SERVER_INSECURE: RbusError.BUS_ERROR,
        FaultCode.CORRUPT_DATA: RbusError.BUS_ERROR,
        FaultCode.BAD_SIGNATURE: RbusError.BUS_ERROR,
        FaultCode.UNAVAILABLE_USER_ROLE: RbusError.ACCESS_NOT_ALLOWED,
        FaultCode.UNKNOWN_EE: RbusError.BUS_ERROR,
        FaultCode.DU_EE_MISMATCH: RbusError.BUS_ERROR,
        FaultCode.DUPLICATE_DU: RbusError.BUS_ERROR,
        FaultCode.SYSTEM_RESOURCES_EXCEEDED: RbusError.OUT_OF_RESOURCES,
        FaultCode.INVALID_DU_STATE: RbusError.BUS_ERROR,
        FaultCode.INVALID_EE_STATE: RbusError.BUS_ERROR,
        FaultCode.INVALID_UUID: RbusError.INVALID_INPUT,
        FaultCode.DISABLED_EE: RbusError.BUS_ERROR,
        FaultCode.UNKNOWN_DU: RbusError.ELEMENT_DOES_NOT_EXIST,
        FaultCode.DOWNGRADE_NOT_PERMITTED: RbusError.BUS_ERROR,
        FaultCode.FILE_TRANSFER_FAILURE: RbusError.BUS_ERROR,
        FaultCode.TRANSFER_AUTH_FAILURE: RbusError.BUS_ERROR,
        FaultCode.UNSUPPORTED_PROTOCOL: RbusError.INVALID_INPUT,
        FaultCode.FILE_ACCESS_FAILURE: RbusError.BUS_ERROR,
        FaultCode.DOWNLOAD_INCOMPLETE: RbusError.BUS_ERROR,
    }
)


def rbus_error_for(error: BaseException) -> RbusError:
    """The rbus code to answer for ``error``: a Fault by the table, anything else BUS_ERROR."""
    if isinstance(error, Fault):
        return FAULT_TO_RBUS[error.code]
    return RbusError.BUS_ERROR


TR106_TO_RBUS: Final[Mapping[str, ValueType]] = MappingProxyType(
    {
        "string": ValueType.STRING,
        "boolean": ValueType.BOOLEAN,
        "int": ValueType.INT32,
        "unsignedInt": ValueType.UINT32,
        "long": ValueType.INT64,
        "unsignedLong": ValueType.UINT64,
        "dateTime": ValueType.DATETIME,
    }
)


def rbus_type(tr106_type: str, *, is_list: bool = False) -> ValueType:
    """The rbus type carrying a TR-106 type: lists, base64, hexBinary, decimal... are strings."""
    return ValueType.STRING if is_list else TR106_TO_RBUS.get(tr106_type, ValueType.STRING)


# (size, {field: offset}) of every struct this binding lays out itself, measured with gcc
# against rbus 2.6.0's headers: x86_64 (8-byte pointers) and i386 (4-byte; 32-bit ARM
# lays these out the same way, none of them holds a 64-bit member).
Layout = Mapping[str, tuple[int, Mapping[str, int]]]
LAYOUTS: Final[Mapping[int, Layout]] = {
    8: {
        "rbusCallbackTable_t": (48, {
            "getHandler": 0, "setHandler": 8, "tableAddRowHandler": 16, "tableRemoveRowHandler": 24,
            "eventSubHandler": 32, "methodHandler": 40,
        }),
        "rbusDataElement_t": (64, {"name": 0, "type": 8, "cbTable": 16}),
        "rbusSetOptions_t": (8, {"commit": 0, "sessionId": 4}),
        "rbusGetHandlerOptions_t": (16, {"context": 0, "requestingComponent": 8}),
        "rbusSetHandlerOptions_t": (16, {"commit": 0, "sessionId": 4, "requestingComponent": 8}),
        "rbusEvent_t": (24, {"name": 0, "type": 8, "data": 16}),
        "rbusTimeZone_t": (12, {"m_tzhour": 0, "m_tzmin": 4, "m_isWest": 8}),
        "rbusDateTime_t": (48, {"m_time": 0, "m_tz": 36}),
    },
    4: {
        "rbusCallbackTable_t": (24, {
            "getHandler": 0, "setHandler": 4, "tableAddRowHandler": 8, "tableRemoveRowHandler": 12,
            "eventSubHandler": 16, "methodHandler": 20,
        }),
        "rbusDataElement_t": (32, {"name": 0, "type": 4, "cbTable": 8}),
        "rbusSetOptions_t": (8, {"commit": 0, "sessionId": 4}),
        "rbusGetHandlerOptions_t": (8, {"context": 0, "requestingComponent": 4}),
        "rbusSetHandlerOptions_t": (12, {"commit": 0, "sessionId": 4, "requestingComponent": 8}),
        "rbusEvent_t": (12, {"name": 0, "type": 4, "data": 8}),
        "rbusTimeZone_t": (12, {"m_tzhour": 0, "m_tzmin": 4, "m_isWest": 8}),
        "rbusDateTime_t": (48, {"m_time": 0, "m_tz": 36}),
    },
}  # fmt: skip


def check_layout(layouts: Mapping[int, Layout] = LAYOUTS) -> None:
    """Refuse (AdapterUnavailable) unless cffi lays out every struct as rbus does."""
    pointer = ffi.sizeof("void *")
    expected = layouts.get(pointer)
    if expected is None:
        raise AdapterUnavailable(f"rbus: no verified struct layout for {8 * pointer}-bit pointers")
    problems = []
    for struct, (size, fields) in expected.items():
        if ffi.sizeof(struct) != size:
            problems.append(f"sizeof({struct}) is {ffi.sizeof(struct)}, rbus has {size}")
        for field, offset in fields.items():
            if ffi.offsetof(struct, field) != offset:
                problems.append(f"{struct}.{field} at {ffi.offsetof(struct, field)}, rbus has {offset}")
    if problems:
        raise AdapterUnavailable("rbus binding does not match librbus's layout: " + "; ".join(problems))


class RbusCallFailed(Exception):
    """A librbus call returned an error code."""

    def __init__(self, call: str, code: int) -> None:
        self.call = call
        self.code = code
        super().__init__(f"{call} failed: rbus error {code} ({_enum_name(RbusError, code)})")


# A value with the TR-106 type it is published as: ("1.0", "string"), (3, "unsignedInt").
Typed = tuple[Any, str]
UNKNOWN_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)  # TR-106's "0001-01-01T00:00:00Z"

_INTEGERS: Final[Mapping[ValueType, tuple[int, int]]] = {
    ValueType.INT32: (-(2**31), 2**31 - 1),
    ValueType.UINT32: (0, 2**32 - 1),
    ValueType.INT64: (-(2**63), 2**63 - 1),
    ValueType.UINT64: (0, 2**64 - 1),
}
# How each rbus integer type is read: (Ex getter, C type of its out-parameter).
_INTEGER_GETTERS: Final[Mapping[ValueType, tuple[str, str]]] = {
    ValueType.BYTE: ("rbusValue_GetByteEx", "unsigned char *"),
    ValueType.INT8: ("rbusValue_GetInt8Ex", "int8_t *"),
    ValueType.UINT8: ("rbusValue_GetUInt8Ex", "uint8_t *"),
    ValueType.INT16: ("rbusValue_GetInt16Ex", "int16_t *"),
    ValueType.UINT16: ("rbusValue_GetUInt16Ex", "uint16_t *"),
    ValueType.INT32: ("rbusValue_GetInt32Ex", "int32_t *"),
    ValueType.UINT32: ("rbusValue_GetUInt32Ex", "uint32_t *"),
    ValueType.INT64: ("rbusValue_GetInt64Ex", "int64_t *"),
    ValueType.UINT64: ("rbusValue_GetUInt64Ex", "uint64_t *"),
}
_SETTER_SUFFIX: Final[Mapping[ValueType, str]] = {
    ValueType.BOOLEAN: "Boolean",
    ValueType.INT32: "Int32",
    ValueType.UINT32: "UInt32",
    ValueType.INT64: "Int64",
    ValueType.UINT64: "UInt64",
    ValueType.DATETIME: "Time",
    ValueType.STRING: "String",
}


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected bool, got {type(value).__name__}")
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int, got {type(value).__name__}")
    return value


def _as_text(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value.encode()


def _as_datetime(value: Any) -> Any:
    """A new ``rbusDateTime_t *`` for a datetime (naive means UTC) or an ISO 8601 string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = int((value.utcoffset() or timedelta(0)).total_seconds()) // 60
    out = ffi.new("rbusDateTime_t *")
    tm = out.m_time
    tm.tm_sec, tm.tm_min, tm.tm_hour = value.second, value.minute, value.hour
    tm.tm_mday, tm.tm_mon, tm.tm_year = value.day, value.month - 1, value.year - 1900
    tm.tm_wday, tm.tm_yday = value.isoweekday() % 7, value.timetuple().tm_yday - 1
    out.m_tz.m_tzhour, out.m_tz.m_tzmin, out.m_tz.m_isWest = abs(offset) // 60, abs(offset) % 60, offset < 0
    return out


def _from_datetime(value: Any) -> datetime:
    tm, tz = value.m_time, value.m_tz
    if tm.tm_year == 0 and tm.tm_mday == 0:  # rbus's all-zero "unknown" time
        return UNKNOWN_TIME
    minutes = tz.m_tzhour * 60 + tz.m_tzmin
    zone = timezone(timedelta(minutes=-minutes if tz.m_isWest else minutes))
    return datetime(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tzinfo=zone)


_CONVERTERS: Final[Mapping[ValueType, Callable[[Any], Any]]] = {
    ValueType.BOOLEAN: _as_bool,
    ValueType.INT32: _as_int,
    ValueType.UINT32: _as_int,
    ValueType.INT64: _as_int,
    ValueType.UINT64: _as_int,
    ValueType.DATETIME: _as_datetime,
    ValueType.STRING: _as_text,
}

Setter = Callable[[Any, Any], None]


class Rbus:
    """A loaded librbus: typed value conversions and the handles opened on it."""

    def __init__(self, lib: Any, companions: Sequence[Any] = ()) -> None:
        self.lib = lib
        self._companions = tuple(companions)  # keep them loaded as long as lib
        self._value_setters = self._setters("rbusValue")
        self._property_setters = self._setters("rbusProperty")

    def _setters(self, prefix: str) -> dict[ValueType, Setter]:
        def setter(function: Callable[[Any, Any], None], convert: Callable[[Any], Any]) -> Setter:
            return lambda target, value: function(target, convert(value))

        return {
            vtype: setter(getattr(self.lib, f"{prefix}_Set{suffix}"), _CONVERTERS[vtype])
            for vtype, suffix in _SETTER_SUFFIX.items()
        }

    def check(self, call: str, code: int) -> None:
        if code != RbusError.SUCCESS:
            raise RbusCallFailed(call, code)

    def property_setter(self, vtype: ValueType) -> Setter:
        """Stores a Python value of ``vtype`` into an ``rbusProperty_t`` (the get path)."""
        return self._property_setters[vtype]

    def new_value(self, value: Any, vtype: ValueType) -> Any:
        """A new ``rbusValue_t`` holding ``value`` as ``vtype``; the caller releases it."""
        out = ffi.new("rbusValue_t *")
        self.lib.rbusValue_Init(out)
        try:
            self._value_setters[vtype](out[0], value)
        except BaseException:
            self.lib.rbusValue_Release(out[0])
            raise
        return out[0]

    def set_values(self, target: Any, items: Mapping[str, Typed]) -> None:
        """Add each ``name: (value, TR-106 type)`` of ``items`` to the rbusObject_t ``target``."""
        for name, (value, tr106_type) in items.items():
            rvalue = self.new_value(value, rbus_type(tr106_type))
            try:
                self.lib.rbusObject_SetValue(target, name.encode(), rvalue)
            finally:
                self.lib.rbusValue_Release(rvalue)

    def new_object(self, items: Mapping[str, Typed]) -> Any:
        """A new ``rbusObject_t`` holding ``items`` (method outputs, event data); the caller releases it."""
        out = ffi.new("rbusObject_t *")
        self.lib.rbusObject_Init(out, ffi.NULL)
        try:
            self.set_values(out[0], items)
        except BaseException:
            self.lib.rbusObject_Release(out[0])
            raise
        return out[0]

    def decode(self, value: Any) -> Any:
        """The Python value of an ``rbusValue_t``, whatever its rbus type."""
        lib = self.lib
        vtype = lib.rbusValue_GetType(value)
        if vtype == ValueType.STRING:
            text = ffi.new("char const **")
            length = ffi.new("int *")
            lib.rbusValue_GetStringEx(value, text, length)
            raw = ffi.string(text[0], length[0]) if text[0] != ffi.NULL else b""
            try:
                return raw.decode()
            except UnicodeDecodeError as exc:
                raise Fault(FaultCode.INVALID_VALUE, f"string is not UTF-8: {exc}") from None
        if vtype in _INTEGER_GETTERS:
            getter, ctype = _INTEGER_GETTERS[ValueType(vtype)]
            number = ffi.new(ctype)
            getattr(lib, getter)(value, number)
            return int(number[0])
        if vtype == ValueType.BOOLEAN:
            flag = ffi.new("bool *")
            lib.rbusValue_GetBooleanEx(value, flag)
            return bool(flag[0])
        if vtype == ValueType.DATETIME:
            moment = ffi.new("rbusDateTime_t const **")
            lib.rbusValue_GetTimeEx(value, moment)
            try:
                return _from_datetime(moment[0])
            except ValueError as exc:
                raise Fault(FaultCode.INVALID_VALUE, f"invalid dateTime: {exc}") from None
        if vtype in (ValueType.SINGLE, ValueType.DOUBLE):
            single = vtype == ValueType.SINGLE
            real = ffi.new("float *" if single else "double *")
            (lib.rbusValue_GetSingleEx if single else lib.rbusValue_GetDoubleEx)(value, real)
            return float(real[0])
        if vtype == ValueType.BYTES:
            data = ffi.new("uint8_t const **")
            length = ffi.new("int *")
            lib.rbusValue_GetBytesEx(value, data, length)
            return ffi.buffer(data[0], length[0])[:] if data[0] != ffi.NULL else b""
        if vtype == ValueType.OBJECT:
            inner = ffi.new("rbusObject_t *")
            lib.rbusValue_GetObjectEx(value, inner)
            return self.decode_object(inner[0])
        if vtype == ValueType.NONE:
            return None
        raise Fault(FaultCode.INVALID_TYPE, f"unsupported rbus value type {_type_name(vtype)}")

    def decode_as(self, value: Any, vtype: ValueType) -> Any:
        """The Python value of an ``rbusValue_t`` that must carry ``vtype`` (rbus checks no types).

        An integer parameter takes any rbus integer type within its range.
        """
        actual = self.lib.rbusValue_GetType(value)
        if vtype in _INTEGERS and actual in _INTEGER_GETTERS:
            number = self.decode(value)
            low, high = _INTEGERS[vtype]
            if not low <= number <= high:
                raise Fault(FaultCode.INVALID_VALUE, f"{number} is out of range for {vtype.name}")
            return number
        if actual != vtype:
            raise Fault(FaultCode.INVALID_TYPE, f"expected {vtype.name}, got {_type_name(actual)}")
        return self.decode(value)

    def decode_object(self, obj: Any) -> dict[str, Any]:
        """``{name: value}`` for the properties of an ``rbusObject_t`` (method inputs)."""
        out: dict[str, Any] = {}
        prop = self.lib.rbusObject_GetProperties(obj)
        while prop != ffi.NULL:
            out[ffi.string(self.lib.rbusProperty_GetName(prop)).decode()] = self.decode(
                self.lib.rbusProperty_GetValue(prop)
            )
            prop = self.lib.rbusProperty_GetNext(prop)
        return out


def _type_name(vtype: int) -> str:
    return _enum_name(ValueType, vtype)


def _enum_name(enum: type[IntEnum], number: int) -> str:
    try:
        return enum(number).name
    except ValueError:
        return hex(number)


def load(path: str = DEFAULT_LIBRARY) -> Rbus:
    """Load librbus from ``path`` (a file, or a name for the loader to find).

    librtMessage and librbuscore found beside a file path are loaded first with
    RTLD_GLOBAL. Raises AdapterUnavailable when the library cannot be loaded or the
    binding's struct layouts are not rbus's.
    """
    check_layout()
    companions = []
    try:
        directory = os.path.dirname(path)
        for name in COMPANIONS if directory else ():
            candidate = os.path.join(directory, name)
            if os.path.exists(candidate):
                companions.append(ffi.dlopen(candidate, ffi.RTLD_NOW | ffi.RTLD_GLOBAL))
        lib = ffi.dlopen(path, ffi.RTLD_NOW)
    except OSError as exc:
        raise AdapterUnavailable(f"rbus bus unavailable: cannot load {path}: {exc}") from exc
    return Rbus(lib, companions)


# ---- data elements and their handlers ----


@dataclass(frozen=True, slots=True)
class SetRequest:
    """One parameter of a set: its concrete name, the value already checked against the
    declared type, and whether this is the last parameter of the set (commit)."""

    name: str
    value: Any
    commit: bool
    session_id: int
    requester: str


GetHandler = Callable[[str], Any]  # concrete name -> Python value of the declared type
SetHandler = Callable[[SetRequest], None]
AddRowHandler = Callable[[str, str | None], int]  # table name, alias -> instance number
RemoveRowHandler = Callable[[str], None]  # row name ("...Table.3.")
SubscribeHandler = Callable[[SubscribeAction, str, int], bool]  # action, event, interval -> autoPublish
MethodHandler = Callable[[str, dict[str, Any], "MethodReply"], None]  # answers through the reply


@dataclass(frozen=True, slots=True)
class Property:
    """A parameter; ``name`` may hold ``{i}`` for every row of a table."""

    name: str
    type: str  # TR-106 type name
    get: GetHandler
    set: SetHandler | None = None
    subscribe: SubscribeHandler | None = None
    is_list: bool = False
    # Run before answering a get this component makes of the property itself (on rbus's
    # callback thread, between two requests): how the provider's outbox gets that thread
    # without publishing a method of its own.
    own_get: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """A multi-instance object, named ``...Table.{i}.`` or ``...Table.`` (librbus takes both)."""

    name: str
    add_row: AddRowHandler | None = None
    remove_row: RemoveRowHandler | None = None


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    subscribe: SubscribeHandler | None = None


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    call: MethodHandler


Element = Property | Table | Event | Method


class MethodReply:
    """The single answer to one method call, given inside the handler or later from any thread.

    Answered before the handler returns, it goes back as the call's result; otherwise the
    handler's return makes the call asynchronous and the answer is sent with
    ``rbusMethod_SendAsyncResponse`` when it comes. rbus frees the call's input and output
    objects when the handler returns: nothing of them is kept here.
    """

    def __init__(self, rbus: Rbus, method: str, async_handle: Any) -> None:
        self.method = method
        self._rbus = rbus
        self._async_handle = async_handle
        self._lock = threading.Lock()
        self._given = False
        self._deferred = False
        self._answer: tuple[RbusError, Mapping[str, Typed]] | None = None

    @property
    def deferred(self) -> bool:
        """Whether the handler returned unanswered, so the answer goes out asynchronously."""
        with self._lock:
            return self._deferred

    def succeed(self, outputs: Mapping[str, Typed] | None = None) -> None:
        self._give(RbusError.SUCCESS, outputs or {})

    def fail(self, error: BaseException, outputs: Mapping[str, Typed] | None = None) -> None:
        """Answer with ``error``; a Fault's text goes to the caller, anything else stays here.

        ``outputs`` travel beside error_code and error_string (an echoed correlation handle).
        """
        code, described = _error_outputs(error)
        self._give(code, {**(outputs or {}), **described})

    def _give(self, code: RbusError, outputs: Mapping[str, Typed], *, if_open: bool = False) -> None:
        with self._lock:
            if self._given:
                if if_open:
                    return
                raise RuntimeError(f"{self.method} was already answered")
            self._given = True
            if not self._deferred:
                self._answer = (code, outputs)
                return
        lib = self._rbus.lib
        try:
            params = self._rbus.new_object(outputs)
        except BaseException:
            # The caller must still get an answer; rbus fills in error_code/error_string.
            lib.rbusMethod_SendAsyncResponse(self._async_handle, RbusError.BUS_ERROR, ffi.NULL)
            raise
        try:
            code = lib.rbusMethod_SendAsyncResponse(self._async_handle, code, params)
        finally:
            lib.rbusObject_Release(params)
        if code != RbusError.SUCCESS:
            log.warning("rbus: async response to %s not sent (rbus error %s)", self.method, code)

    def _settle(self, out_params: Any) -> int:
        """After the handler returned: write an answer given meanwhile, or go asynchronous."""
        with self._lock:
            if self._answer is None:
                self._deferred = True
                return RbusError.ASYNC_RESPONSE
            code, outputs = self._answer
        try:
            self._rbus.set_values(out_params, outputs)
        except Exception:
            log.exception("rbus: cannot return the outputs of %s", self.method)
            return RbusError.BUS_ERROR
        return code


def _error_outputs(error: BaseException) -> tuple[RbusError, Mapping[str, Typed]]:
    code = rbus_error_for(error)
    text = error.describe() if isinstance(error, Fault) else "internal error"
    return code, {"error_code": (int(code), "int"), "error_string": (text, "string")}


def _failed(what: str, name: str, error: BaseException) -> int:
    """The rbus code for a handler's exception; a Fault is routine, anything else a bug."""
    if isinstance(error, Fault):
        log.info("rbus %s %s: %s", what, name, error)
    else:
        log.error("rbus %s %s failed", what, name, exc_info=error)
    return int(rbus_error_for(error))


def _uncaught(exc_type: type[BaseException], value: BaseException, tb: Any) -> None:
    # Only what escapes the handlers' own try blocks lands here (KeyboardInterrupt...).
    log.error("rbus callback raised", exc_info=(exc_type, value, tb))


class HandlerActivity:
    """The handlers of one handle: how many run now, and when the last one started or
    ended. Updated from rbus's threads; read by close() and the provider's watchdog."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._last = time.monotonic()

    def enter(self) -> None:
        with self._lock:
            self._running += 1
            self._last = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            self._last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since a handler last ran (0 while one runs)."""
        with self._lock:
            return 0.0 if self._running else time.monotonic() - self._last


CLOSE_WAIT = 30.0  # seconds close() waits for librbus to leave our handlers
CLOSE_QUIET = 0.2  # ... judged by this long without a handler running


class Handle:
    """One rbus connection, from ``rbus_open`` to ``close``, and everything it keeps alive."""

    def __init__(self, rbus: Rbus, component: str) -> None:
        self._rbus = rbus
        self.component = component
        self._lib = rbus.lib
        self._keep: list[Any] = []  # callbacks, names, element arrays: rbus holds raw pointers
        self.activity = HandlerActivity()
        self._closing = False
        out = ffi.new("rbusHandle_t *")
        rbus.check("rbus_open", self._lib.rbus_open(out, component.encode()))
        self._handle: Any = out[0]

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (it drops every element); no callback runs after this.

        librbus may still be inside a long partial get, calling our handlers leaf by leaf:
        closing under it frees what it walks (garbage names, then a crash). So from now on
        every handler fails at once, which lets librbus finish the walk quickly (it keeps
        nothing of failed leaves), and the handle is closed once no handler has run for a
        moment (at most CLOSE_WAIT seconds)."""
        if self._handle is None:
            return
        self._closing = True
        deadline = time.monotonic() + CLOSE_WAIT
        while self.activity.quiet_for() < CLOSE_QUIET and time.monotonic() < deadline:
            time.sleep(0.02)
        handle, self._handle = self._handle, None
        try:
            self._rbus.check("rbus_close", self._lib.rbus_close(handle))
        finally:
            self._keep.clear()

    def register(self, elements: Sequence[Element]) -> None:
        """Register data elements: one ``rbus_regDataElements`` call for all of them."""
        array = ffi.new("rbusDataElement_t[]", len(elements))
        for slot, element in zip(array, elements, strict=True):
            name = ffi.new("char[]", element.name.encode())
            self._keep.append(name)
            slot.name = name
            table = slot.cbTable
            match element:
                case Property():
                    slot.type = ElementType.PROPERTY
                    table.getHandler = self._get_callback(element)
                    if element.set is not None:
                        table.setHandler = self._set_callback(element, element.set)
                    if element.subscribe is not None:
                        table.eventSubHandler = self._subscribe_callback(element.subscribe)
                case Table():
                    slot.type = ElementType.TABLE
                    if element.add_row is not None:
                        table.tableAddRowHandler = self._add_row_callback(element.add_row)
                    if element.remove_row is not None:
                        table.tableRemoveRowHandler = self._remove_row_callback(element.remove_row)
                case Event():
                    slot.type = ElementType.EVENT
                    if element.subscribe is not None:
                        table.eventSubHandler = self._subscribe_callback(element.subscribe)
                case Method():
                    slot.type = ElementType.METHOD
                    table.methodHandler = ffi.cast("void *", self._method_callback(element.call))
        self._keep.append(array)
        self._rbus.check("rbus_regDataElements", self._lib.rbus_regDataElements(self._live(), len(elements), array))

    def register_row(self, table: str, instance: int, alias: str | None = None) -> None:
        """Make row ``instance`` of ``table`` ("...Table.") exist; rbus publishes OBJECT_CREATED."""
        alias_arg = alias.encode() if alias is not None else ffi.NULL
        code = self._lib.rbusTable_registerRow(self._live(), table.encode(), instance, alias_arg)
        self._rbus.check("rbusTable_registerRow", code)

    def unregister_row(self, row: str) -> None:
        """Remove a row ("...Table.3."); rbus publishes OBJECT_DELETED."""
        self._rbus.check("rbusTable_unregisterRow", self._lib.rbusTable_unregisterRow(self._live(), row.encode()))

    def publish(self, name: str, data: Mapping[str, Typed], kind: EventType = EventType.GENERAL) -> bool:
        """Publish event ``name`` with ``data``; False when nobody is subscribed to it."""
        params = self._rbus.new_object(data)
        try:
            event = ffi.new("rbusEvent_t *")
            event_name = ffi.new("char[]", name.encode())
            event.name, event.type, event.data = event_name, kind, params
            code = self._lib.rbusEvent_Publish(self._live(), event)
        finally:
            self._lib.rbusObject_Release(params)
        if code == RbusError.NOSUBSCRIBERS:
            return False
        self._rbus.check("rbusEvent_Publish", code)
        return True

    # ---- consumer calls (benchmarks, diagnostics); never from a handler of this process ----

    def get(self, name: str) -> Any:
        """The value of one parameter, as ``rbus_get`` fetches it from its provider."""
        out = ffi.new("rbusValue_t *")
        self._rbus.check("rbus_get", self._lib.rbus_get(self._live(), name.encode(), out))
        try:
            return self._rbus.decode(out[0])
        finally:
            self._lib.rbusValue_Release(out[0])

    def get_ext(self, names: Sequence[str]) -> list[tuple[str, Any]]:
        """``(name, value)`` of every parameter ``names`` select (partial paths, wildcards)."""
        encoded = [ffi.new("char[]", name.encode()) for name in names]
        count = ffi.new("int *")
        first = ffi.new("rbusProperty_t *")
        code = self._lib.rbus_getExt(self._live(), len(names), ffi.new("char const *[]", encoded), count, first)
        self._rbus.check("rbus_getExt", code)
        found: list[tuple[str, Any]] = []
        try:
            prop = first[0]
            for _ in range(count[0]):
                name = ffi.string(self._lib.rbusProperty_GetName(prop)).decode()
                found.append((name, self._rbus.decode(self._lib.rbusProperty_GetValue(prop))))
                prop = self._lib.rbusProperty_GetNext(prop)
        finally:
            if first[0] != ffi.NULL:
                self._lib.rbusProperty_Release(first[0])
        return found

    def invoke(self, method: str) -> dict[str, Any]:
        """Call ``method`` without inputs and wait for its outputs (``rbusMethod_Invoke``)."""
        out = ffi.new("rbusObject_t *")
        code = self._lib.rbusMethod_Invoke(self._live(), method.encode(), ffi.NULL, out)
        try:
            self._rbus.check("rbusMethod_Invoke", code)
            return self._rbus.decode_object(out[0])
        finally:
            if out[0] != ffi.NULL:
                self._lib.rbusObject_Release(out[0])

    def _live(self) -> Any:
        if self._handle is None:
            raise RbusCallFailed("rbus handle", RbusError.INVALID_HANDLE)
        return self._handle

    def _callback(self, ctype: str, function: Callable[..., int]) -> Any:
        activity = self.activity

        def tracked(*args: Any) -> int:
            activity.enter()
            try:
                if self._closing:
                    return int(RbusError.DESTINATION_NOT_REACHABLE)
                return function(*args)
            finally:
                activity.leave()

        # error=: should anything escape, rbus gets BUS_ERROR, never 0 with an empty value.
        callback = ffi.callback(ctype, tracked, error=int(RbusError.BUS_ERROR), onerror=_uncaught)
        self._keep.append(callback)
        return callback

    def _get_callback(self, element: Property) -> Any:
        lib, string, get, own_get = self._lib, ffi.string, element.get, element.own_get
        store = self._rbus.property_setter(rbus_type(element.type, is_list=element.is_list))
        myself = self.component.encode()

        def on_get(handle: Any, prop: Any, options: Any) -> int:
            name = ""
            try:
                name = string(lib.rbusProperty_GetName(prop)).decode()
                who = options.requestingComponent
                if own_get is not None and who != ffi.NULL and string(who) == myself:
                    own_get()
                store(prop, get(name))
            except Exception as exc:
                return _failed("get", name, exc)
            return RbusError.SUCCESS

        return self._callback("rbusGetHandler_t", on_get)

    def _set_callback(self, element: Property, apply: SetHandler) -> Any:
        lib, string, rbus = self._lib, ffi.string, self._rbus
        vtype = rbus_type(element.type, is_list=element.is_list)

        def on_set(handle: Any, prop: Any, options: Any) -> int:
            name = ""
            try:
                name = string(lib.rbusProperty_GetName(prop)).decode()
                value = rbus.decode_as(lib.rbusProperty_GetValue(prop), vtype)
                who = options.requestingComponent
                requester = string(who).decode() if who != ffi.NULL else ""
                apply(SetRequest(name, value, bool(options.commit), int(options.sessionId), requester))
            except Exception as exc:
                return _failed("set", name, exc)
            return RbusError.SUCCESS

        return self._callback("rbusSetHandler_t", on_set)

    def _add_row_callback(self, add_row: AddRowHandler) -> Any:
        string = ffi.string

        def on_add_row(handle: Any, table: Any, alias: Any, instance: Any) -> int:
            name = ""
            try:
                name = string(table).decode()
                instance[0] = add_row(name, string(alias).decode() if alias != ffi.NULL else None)
            except Exception as exc:
                return _failed("add row", name, exc)
            return RbusError.SUCCESS

        return self._callback("rbusTableAddRowHandler_t", on_add_row)

    def _remove_row_callback(self, remove_row: RemoveRowHandler) -> Any:
        string = ffi.string

        def on_remove_row(handle: Any, row: Any) -> int:
            name = ""
            try:
                name = string(row).decode()
                remove_row(name)
            except Exception as exc:
                return _failed("remove row", name, exc)
            return RbusError.SUCCESS

        return self._callback("rbusTableRemoveRowHandler_t", on_remove_row)

    def _subscribe_callback(self, subscribe: SubscribeHandler) -> Any:
        string = ffi.string

        def on_subscribe(handle: Any, action: int, event: Any, rfilter: Any, interval: int, auto: Any) -> int:
            name = ""
            try:
                name = string(event).decode()
                auto[0] = bool(subscribe(SubscribeAction(action), name, int(interval)))
            except Exception as exc:
                return _failed("subscribe", name, exc)
            return RbusError.SUCCESS

        return self._callback("rbusEventSubHandler_t", on_subscribe)

    def _method_callback(self, call: MethodHandler) -> Any:
        rbus, string = self._rbus, ffi.string

        def on_method(handle: Any, method: Any, in_params: Any, out_params: Any, async_handle: Any) -> int:
            name = ""
            try:
                name = string(method).decode()
                reply = MethodReply(rbus, name, async_handle)
            except Exception as exc:
                return _failed("method", name, exc)
            try:
                call(name, rbus.decode_object(in_params), reply)
            except Exception as exc:
                _failed("method", name, exc)
                reply._give(*_error_outputs(exc), if_open=True)
            return reply._settle(out_params)

        return self._callback("rbusMethodHandler_t", on_method)
