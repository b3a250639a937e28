"""A consumer of the real librbus for the bus contract: the calls another component makes
(rbus_getExt, rbus_setMulti, rbusTable_addRow/removeRow/getRowNames, rbusMethod_Invoke,
rbusMethod_InvokeAsync, rbusEvent_Subscribe/Unsubscribe) through a test-only cffi binding:
the product's provider cdef (bindings/rbus.cdef) plus these consumer declarations, written
from rbus 2.6.0's include/rbus.h. Same interface as the stand-in's
:class:`tests.support.rbus_standin.Consumer`; values as (ValueType, Python value),
datetimes as ``datetime``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cffi

from dsm_tr181.buses.rbus_ffi import COMPANIONS, RbusError, ValueType, _from_datetime
from tests.support.rbus_standin import Received

CDEF = Path(__file__).resolve().parents[2] / "bindings" / "rbus.cdef"
CONSUMER = """
typedef struct _rbusRowName {
    char const* name;
    uint32_t instNum;
    char const* alias;
    struct _rbusRowName* next;
} rbusRowName_t;
typedef struct _rbusEventSubscription rbusEventSubscription_t;
typedef void (*rbusEventHandler_t)(rbusHandle_t, rbusEvent_t const*, rbusEventSubscription_t*);
typedef void (*rbusMethodAsyncRespHandler_t)(rbusHandle_t, char const*, rbusError_t, rbusObject_t);
rbusError_t rbus_setMulti(rbusHandle_t handle, int numProps, rbusProperty_t properties, rbusSetOptions_t* opts);
rbusError_t rbusTable_addRow(rbusHandle_t handle, char const* tableName, char const* aliasName, uint32_t* instNum);
rbusError_t rbusTable_removeRow(rbusHandle_t handle, char const* rowName);
rbusError_t rbusTable_getRowNames(rbusHandle_t handle, char const* tableName, rbusRowName_t** rowNames);
rbusError_t rbusTable_freeRowNames(rbusHandle_t handle, rbusRowName_t* rows);
rbusError_t rbusMethod_InvokeAsync(rbusHandle_t handle, char const* methodName, rbusObject_t inParams,
                                   rbusMethodAsyncRespHandler_t callback, int timeout);
rbusError_t rbusEvent_Subscribe(rbusHandle_t handle, char const* eventName, rbusEventHandler_t handler,
                                void* userData, int timeout);
rbusError_t rbusEvent_Unsubscribe(rbusHandle_t handle, char const* eventName);
rbusError_t rbus_discoverComponentDataElements(rbusHandle_t handle, char const* name, bool nextLevel,
                                               int* numElements, char*** elementNames);
void free(void* p);
"""

_ffi = cffi.FFI()
_ffi.cdef(CDEF.read_text() + CONSUMER)


class RealConsumer:
    def __init__(self, library: Path, name: str = "contract-consumer") -> None:
        for companion in COMPANIONS:
            if (library.parent / companion).exists():
                _ffi.dlopen(str(library.parent / companion), _ffi.RTLD_NOW | _ffi.RTLD_GLOBAL)
        self.lib = _ffi.dlopen(str(library))
        out = _ffi.new("rbusHandle_t *")
        code = self.lib.rbus_open(out, name.encode())
        if code != RbusError.SUCCESS:
            raise RuntimeError(f"rbus_open: {RbusError(code).name}")
        self.handle = out[0]
        self._keep: list[Any] = []
        self._handlers: dict[str, Callable[[Received], None]] = {}
        self._on_event = _ffi.callback("rbusEventHandler_t", self._event)
        self._pending: set[Any] = set()

    def close(self) -> None:
        self.lib.rbus_close(self.handle)

    # -- values ---------------------------------------------------------------------------------

    def _python(self, value: Any) -> tuple[int, Any]:
        lib = self.lib
        vtype = int(lib.rbusValue_GetType(value))
        if vtype == ValueType.STRING:
            text, length = _ffi.new("char const **"), _ffi.new("int *")
            lib.rbusValue_GetStringEx(value, text, length)
            return vtype, _ffi.string(text[0], length[0]).decode() if text[0] != _ffi.NULL else ""
        getters = {ValueType.BOOLEAN: ("rbusValue_GetBooleanEx", "bool *"),
                   ValueType.INT32: ("rbusValue_GetInt32Ex", "int32_t *"),
                   ValueType.UINT32: ("rbusValue_GetUInt32Ex", "uint32_t *"),
                   ValueType.INT64: ("rbusValue_GetInt64Ex", "int64_t *"),
                   ValueType.UINT64: ("rbusValue_GetUInt64Ex", "uint64_t *")}  # fmt: skip
        if vtype in getters:
            getter, ctype = getters[ValueType(vtype)]
            out = _ffi.new(ctype)
            getattr(lib, getter)(value, out)
            return vtype, out[0]
        if vtype == ValueType.DATETIME:
            moment = _ffi.new("rbusDateTime_t const **")
            lib.rbusValue_GetTimeEx(value, moment)
            return vtype, _from_datetime(moment[0])
        return vtype, None

    def _new_value(self, vtype: int, data: Any) -> Any:
        out = _ffi.new("rbusValue_t *")
        self.lib.rbusValue_Init(out)
        setters = {ValueType.BOOLEAN: "Boolean", ValueType.INT32: "Int32", ValueType.UINT32: "UInt32",
                   ValueType.INT64: "Int64", ValueType.UINT64: "UInt64", ValueType.STRING: "String"}  # fmt: skip
        setter = setters[ValueType(vtype)]
        if vtype == ValueType.STRING:
            data = data.encode()
        getattr(self.lib, f"rbusValue_Set{setter}")(out[0], data)
        return out[0]

    def _object(self, items: Mapping[str, tuple[int, Any]]) -> Any:
        out = _ffi.new("rbusObject_t *")
        self.lib.rbusObject_Init(out, _ffi.NULL)
        for name, (vtype, data) in items.items():
            value = self._new_value(vtype, data)
            self.lib.rbusObject_SetValue(out[0], name.encode(), value)
            self.lib.rbusValue_Release(value)
        return out[0]

    def _decode_object(self, obj: Any) -> dict[str, tuple[int, Any]]:
        found = {}
        prop = self.lib.rbusObject_GetProperties(obj) if obj != _ffi.NULL else _ffi.NULL
        while prop != _ffi.NULL:
            found[_ffi.string(self.lib.rbusProperty_GetName(prop)).decode()] = self._python(
                self.lib.rbusProperty_GetValue(prop)
            )
            prop = self.lib.rbusProperty_GetNext(prop)
        return found

    # -- the calls ------------------------------------------------------------------------------

    def get(self, names: list[str]) -> tuple[int, dict[str, tuple[int, Any]]]:
        encoded = [_ffi.new("char[]", name.encode()) for name in names]
        count = _ffi.new("int *")
        first = _ffi.new("rbusProperty_t *")
        code = self.lib.rbus_getExt(self.handle, len(names), _ffi.new("char const *[]", encoded), count, first)
        if code != RbusError.SUCCESS:
            return int(code), {}
        values = {}
        prop = first[0]
        for _ in range(count[0]):
            values[_ffi.string(self.lib.rbusProperty_GetName(prop)).decode()] = self._python(
                self.lib.rbusProperty_GetValue(prop)
            )
            prop = self.lib.rbusProperty_GetNext(prop)
        if first[0] != _ffi.NULL:
            self.lib.rbusProperty_Release(first[0])
        return RbusError.SUCCESS, values

    def set(self, values: Mapping[str, tuple[int, Any]], commit: bool = True) -> int:
        first = _ffi.NULL
        for name, (vtype, data) in values.items():
            value = self._new_value(vtype, data)
            out = _ffi.new("rbusProperty_t *")
            self.lib.rbusProperty_Init(out, name.encode(), value)
            self.lib.rbusValue_Release(value)
            if first == _ffi.NULL:
                first = out[0]
            else:
                self.lib.rbusProperty_Append(first, out[0])
                self.lib.rbusProperty_Release(out[0])
        options = _ffi.new("rbusSetOptions_t *")
        options.commit = commit
        try:
            return int(self.lib.rbus_setMulti(self.handle, len(values), first, options))
        finally:
            self.lib.rbusProperty_Release(first)

    def add_row(self, table: str, alias: str | None = None) -> tuple[int, int]:
        instance = _ffi.new("uint32_t *")
        code = self.lib.rbusTable_addRow(self.handle, table.encode(), alias.encode() if alias else _ffi.NULL, instance)
        return int(code), int(instance[0])

    def remove_row(self, row: str) -> int:
        return int(self.lib.rbusTable_removeRow(self.handle, row.encode()))

    def row_names(self, table: str) -> tuple[int, list[tuple[int, str]]]:
        rows = _ffi.new("rbusRowName_t **")
        code = self.lib.rbusTable_getRowNames(self.handle, table.encode(), rows)
        if code != RbusError.SUCCESS:
            return int(code), []
        found = []
        row = rows[0]
        while row != _ffi.NULL:
            found.append((int(row.instNum), _ffi.string(row.alias).decode() if row.alias != _ffi.NULL else ""))
            row = row.next
        self.lib.rbusTable_freeRowNames(self.handle, rows[0])
        return RbusError.SUCCESS, sorted(found)

    def invoke(self, method: str, inputs: Mapping[str, tuple[int, Any]]) -> tuple[int, dict[str, tuple[int, Any]]]:
        in_params = self._object(inputs)
        out = _ffi.new("rbusObject_t *")
        try:
            code = self.lib.rbusMethod_Invoke(self.handle, method.encode(), in_params, out)
        finally:
            self.lib.rbusObject_Release(in_params)
        outputs = self._decode_object(out[0])
        if out[0] != _ffi.NULL:
            self.lib.rbusObject_Release(out[0])
        return int(code), outputs

    def invoke_async(
        self, method: str, inputs: Mapping[str, tuple[int, Any]], done: Callable[[int, dict[str, Any]], None]
    ) -> None:
        def answered(handle: Any, name: Any, code: int, params: Any) -> None:
            done(int(code), self._decode_object(params))
            self._pending.discard(callback)

        callback = _ffi.callback("rbusMethodAsyncRespHandler_t", answered)
        self._pending.add(callback)
        in_params = self._object(inputs)
        try:
            code = self.lib.rbusMethod_InvokeAsync(self.handle, method.encode(), in_params, callback, 30)
        finally:
            self.lib.rbusObject_Release(in_params)
        if code != RbusError.SUCCESS:
            threading.Thread(target=done, args=(int(code), {}), daemon=True).start()

    def published(self, component: str) -> list[str]:
        """rbus_discoverComponentDataElements: every element name ``component`` registered."""
        count, names = _ffi.new("int *"), _ffi.new("char ***")
        code = self.lib.rbus_discoverComponentDataElements(self.handle, component.encode(), False, count, names)
        if code != RbusError.SUCCESS:
            raise RuntimeError(f"rbus_discoverComponentDataElements: {RbusError(code).name}")
        found = [_ffi.string(names[0][i]).decode() for i in range(count[0])]
        libc = _ffi.dlopen(None)
        for i in range(count[0]):
            libc.free(names[0][i])
        libc.free(names[0])
        return found

    def subscribe(self, name: str, handler: Callable[[Received], None]) -> int:
        self._handlers[name] = handler
        return int(self.lib.rbusEvent_Subscribe(self.handle, name.encode(), self._on_event, _ffi.NULL, 0))

    def unsubscribe(self, name: str) -> None:
        self.lib.rbusEvent_Unsubscribe(self.handle, name.encode())
        self._handlers.pop(name, None)

    def _event(self, handle: Any, event: Any, subscription: Any) -> None:
        name = _ffi.string(event.name).decode()
        data = {key: value for key, (_vtype, value) in self._decode_object(event.data).items()}
        received = Received(name, int(event.type), data)
        for subscribed, handler in list(self._handlers.items()):
            if _covers(subscribed, name):
                handler(received)
                return


def _covers(subscribed: str, name: str) -> bool:
    if "*" in subscribed:
        return re.fullmatch(re.escape(subscribed).replace(r"\*", r"\d+"), name) is not None
    return subscribed == name
