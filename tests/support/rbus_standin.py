"""A stand-in for librbus 2.6.0 (with its broker, rtrouted) inside the test process.

What it is: an object with the C functions of librbus that ``bindings/rbus.cdef`` declares,
taking and returning the same cffi values as the real library (``rbusValue_t``,
``rbusProperty_t`` and ``rbusObject_t`` are opaque pointers, handlers are the binding's
``ffi.callback`` function pointers, called with real ``rbusGetHandlerOptions_t`` /
``rbusSetHandlerOptions_t`` structs), so that the unchanged binding (``rbus_ffi.Rbus``) and
provider (``RbusProvider``) run on it; plus :class:`Consumer`, what another process's
``rbus_getExt`` / ``rbus_setMulti`` / ``rbusTable_addRow`` / ``rbusTable_removeRow`` /
``rbusMethod_Invoke`` / ``rbusMethod_InvokeAsync`` / ``rbusEvent_Subscribe`` would do.
It is selected by monkeypatching ``rbus_ffi.load``; the real library runs the same contract
when ``DSM_RBUS_LIBRARY`` and ``DSM_RTROUTED`` are set.

Checked against rdkcentral/rbus v2.6.0 ``src/rbus/rbus.c`` (function names given), and run:
the bus contract (tests/contract/test_bus_contract.py) passes unchanged, with the same
capability declarations, on this stand-in and on librbus 2.6.0 with rtrouted built from
that tag (its ``rbus`` parameter, through tests/support/rbus_consumer.py):

- requests to a component run one at a time on that component's own callback thread
  (rtConnection's dispatch thread); a consumer waits for the answer;
- element names: a table registers as ``A.{i}.`` or ``A.`` (the same tree); rows exist only once
  ``rbusTable_registerRow(table "A.", n, alias)`` made them (``registerTableRow``); a name
  reaches a row by number or ``[alias]`` (``retrieveInstanceElementEx``); a second
  registerRow of a row, or one of an unknown table, is ``RBUS_ERROR_INVALID_INPUT``, as is
  unregisterRow of an unknown row;
- registerRow publishes ``RBUS_EVENT_OBJECT_CREATED`` on the table name with ``rowName``
  (table + number, no trailing dot), ``instNum``, ``alias``; unregisterRow publishes
  ``RBUS_EVENT_OBJECT_DELETED`` with ``rowName`` (``registerTableRow``,
  ``unregisterTableRow``);
- a name no component registered (a row's ``{i}`` standing for any number) is answered by
  the broker: ``RBUS_ERROR_DESTINATION_NOT_FOUND``, for gets, sets and method calls alike
  (measured with librbus 2.6.0 and rtrouted, see below);
- a handler's options name the requesting component (``requestingComponent``), a consumer's
  own get of its own element included (``_get_callback_handler``, ``_set_callback_handler``);
- a get of one name calls that element's get handler and returns its error as is; a name
  of a row not registered is ``RBUS_ERROR_ELEMENT_DOES_NOT_EXIST`` (``_get_single_dml_handler``);
- a name ending in ``.`` is a partial path: every property below it, rows expanded, in
  registration order; a property whose handler fails is left out, not an error; an unknown
  partial path is ``ELEMENT_DOES_NOT_EXIST``; ``Table.*.Name`` expands ``*`` over the
  table's rows; ``*`` on a non-table is ``RBUS_ERROR_ACCESS_NOT_ALLOWED``
  (``get_recursive_wildcard_handler``, ``_get_recursive_partialpath_handler``);
- a set calls the set handler of each property in turn with ``commit`` true only for the
  last of a commit request, stops at the first failure and returns its error; a property
  without a set handler is ``RBUS_ERROR_NOT_WRITABLE``, an unknown one
  ``ELEMENT_DOES_NOT_EXIST`` (``_set_callback_handler``);
- rbusTable_addRow calls the table's add-row handler and then registers the row itself
  (and so publishes OBJECT_CREATED); a name not ending in ``.`` is ``INVALID_INPUT``
  (``rbusTable_addRow``, ``_table_add_row_callback_handler``); removeRow calls the
  remove-row handler, then unregisters the row;
- a method handler's ``RBUS_ERROR_ASYNC_RESPONSE`` leaves the call open until
  ``rbusMethod_SendAsyncResponse``; a failed call without ``error_code`` in its outputs gets
  ``error_code`` and ``error_string`` added (``_method_callback_handler``,
  ``rbusMethod_SendAsyncResponse``); an unknown method is ``ELEMENT_DOES_NOT_EXIST``;
- subscribing calls the element's subscribe handler (action, name, interval, autoPublish
  out); rbusEvent_Publish delivers to the subscribers of that name and answers
  ``RBUS_ERROR_NOSUBSCRIBERS`` when there are none.

A discovery (rbus_discoverComponentDataElements) lists the component's own name, then its
elements as registered, tables without their trailing dot (measured with librbus 2.6.0).

Not modelled: sessions, filters, interval and duration subscriptions (autoPublish polling),
direct connections, rbus's timeouts (a consumer waits up to ``CALL_TIMEOUT``), discovery.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsm_tr181.buses._rbus_cffi import ffi
from dsm_tr181.buses.rbus_ffi import ElementType, EventType, RbusError, SubscribeAction, ValueType

CALL_TIMEOUT = 30.0


def _text(arg: Any) -> str | None:
    """A ``char const *`` argument: Python bytes (what the binding passes) or a cdata pointer."""
    if isinstance(arg, bytes):
        return arg.decode()
    if arg is None or arg == ffi.NULL:
        return None
    return str(ffi.string(arg).decode())


# == values, properties, objects (rbus_value.c, rbus_property.c, rbus_object.c) ==================


@dataclass
class _Value:
    type: int = ValueType.NONE
    data: Any = None
    keep: Any = None  # the C memory a getter hands out (string, bytes, rbusDateTime_t)


@dataclass
class _Property:
    name: str
    value: int = 0  # a _Value key, or 0
    next: int = 0  # the next _Property key, or 0
    cname: Any = None


@dataclass
class _Object:
    first: int = 0  # the first _Property key, or 0


class _Heap:
    """Opaque pointers for Python objects, reference counted as rbus's are."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[int, list[Any]] = {}  # key -> [object, references]
        self._next = itertools.count(0x1000, 0x10)

    def new(self, obj: Any) -> int:
        with self._lock:
            key = next(self._next)
            self._objects[key] = [obj, 1]
        return key

    def get(self, key: int) -> Any:
        with self._lock:
            return self._objects[key][0]

    def retain(self, key: int) -> None:
        with self._lock:
            self._objects[key][1] += 1

    def release(self, key: int) -> Any:
        """Drop a reference; the object when that was the last one."""
        with self._lock:
            entry = self._objects[key]
            entry[1] -= 1
            if entry[1] > 0:
                return None
            del self._objects[key]
            return entry[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


def _key(pointer: Any) -> int:
    return int(ffi.cast("uintptr_t", pointer))


# == the broker and its components ================================================================


@dataclass
class _Element:
    name: str  # as registered, "{i}" for rows
    type: ElementType
    callbacks: Any  # rbusCallbackTable_t (a copy)
    component: _Component


@dataclass
class _Subscription:
    name: str
    deliver: Callable[[str, int, dict[str, Any]], None]  # event name, type, data


class _Component:
    """One rbus_open handle: its elements, rows and callback thread."""

    def __init__(self, bus: StandInBus, name: str) -> None:
        self.bus = bus
        self.name = name
        self.cname = ffi.new("char[]", name.encode())
        self.pointer = ffi.cast("rbusHandle_t", bus.heap.new(self))
        self.elements: dict[str, _Element] = {}
        self._requests: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name=f"rbus-standin-{name}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            work, answer = request
            try:
                answer.set_result(work())
            except BaseException as exc:  # handed to the waiting consumer
                answer.set_exception(exc)

    def call(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` on this component's callback thread and wait for it, as a request does."""
        if threading.current_thread() is self.thread:  # librbus deadlocks until the consumer's timeout
            raise RuntimeError(f"a handler of {self.name} called its own component synchronously")
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._requests.put((work, answer))
        return answer.result(CALL_TIMEOUT)

    def stop(self) -> None:
        self._requests.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(5)


class StandInBus:
    """rtrouted and every component of the processes it serves."""

    def __init__(self) -> None:
        self.heap = _Heap()
        self.lock = threading.RLock()
        self.components: dict[str, _Component] = {}
        self.rows: dict[str, dict[int, str]] = {}  # concrete table name "A.1.B." -> {instance: alias}
        self.subscriptions: list[_Subscription] = []
        self.lib = LibrbusStandIn(self)

    # -- names ----------------------------------------------------------------------------------

    def _tables(self) -> set[str]:
        return {name for name, element in self._all_elements() if element.type is ElementType.TABLE}

    def _all_elements(self) -> Iterator[tuple[str, _Element]]:
        for component in list(self.components.values()):
            yield from list(component.elements.items())

    def routed(self, name: str) -> bool:
        """Whether the broker knows a component for ``name``: a registered element's name, a
        row ("{i}") standing for any instance, or a partial path above one. Else the
        consumer gets ``RBUS_ERROR_DESTINATION_NOT_FOUND`` from the broker itself (measured
        with librbus 2.6.0 and rtrouted: gets, sets and method calls alike)."""
        with self.lock:
            for registered, _element in self._all_elements():
                pattern = re.escape(registered).replace(r"\{i\}", r"[^.]+")
                if re.fullmatch(pattern, name) or (name.endswith(".") and re.match(pattern, name)):
                    return True
                if name.endswith(".") and registered.startswith(name):
                    return True
            return False

    def registered(self) -> list[tuple[str, ElementType]]:
        """Every registered element (name, type): what a discovery of the bus lists."""
        with self.lock:
            return [(name, element.type) for name, element in self._all_elements()]

    def element(self, template: str) -> _Element | None:
        for component in self.components.values():
            if template in component.elements:
                return component.elements[template]
        return None

    def resolve(self, name: str) -> str | None:
        """The registered name ``name`` reaches (rows by number or [alias]), None if none."""
        with self.lock:
            tables = self._tables()
            template: list[str] = []
            concrete: list[str] = []
            parts = name.split(".")
            for index, part in enumerate(parts):
                table_template = "".join(p + "." for p in template) + "{i}."
                if table_template in tables and (part or index < len(parts) - 1):
                    rows = self.rows.get("".join(p + "." for p in concrete), {})
                    alias = re.fullmatch(r"\[(.+)\]", part)
                    if alias and alias[1] not in rows.values():
                        return None
                    if not alias and not (part.isdigit() and int(part) in rows):
                        return None
                    template.append("{i}")
                else:
                    template.append(part)
                concrete.append(part)
            return ".".join(template)

    def expand(self, prefix: str) -> list[str]:
        """Every property name below the partial path ``prefix``, rows expanded, in registration
        order (``_get_recursive_partialpath_handler``)."""
        with self.lock:
            found: list[str] = []
            for name, element in self._all_elements():
                if element.type is ElementType.PROPERTY:
                    found += [concrete for concrete in self._instances(name) if concrete.startswith(prefix)]
            return found

    def _instances(self, template: str) -> list[str]:
        names = [""]
        for part in template.split("."):
            grown = []
            for done in names:
                if part == "{i}":
                    grown += [f"{done}{number}." for number in sorted(self.rows.get(done, {}))]
                else:
                    grown.append(f"{done}{part}.")
            names = grown
        return [name[:-1] for name in names]

    # -- rows and events ------------------------------------------------------------------------

    def register_row(self, component: _Component, table: str, instance: int, alias: str | None) -> int:
        with self.lock:
            template = self.resolve(table)
            if template is None or self.element(template + "{i}.") is None:
                return RbusError.INVALID_INPUT
            rows = self.rows.setdefault(table, {})
            if instance in rows:
                return RbusError.INVALID_INPUT
            rows[instance] = alias or ""
        data = {"rowName": (ValueType.STRING, f"{table}{instance}"), "instNum": (ValueType.UINT32, instance),
                "alias": (ValueType.STRING, alias or "")}  # fmt: skip
        self.publish(table, EventType.OBJECT_CREATED, data)
        return RbusError.SUCCESS

    def unregister_row(self, component: _Component, row: str) -> int:
        table, _, number = row.rstrip(".").rpartition(".")
        with self.lock:
            rows = self.rows.get(table + ".", {})
            if not number.isdigit() or int(number) not in rows:
                return RbusError.INVALID_INPUT
            del rows[int(number)]
            below = row.rstrip(".") + "."
            for name in [name for name in self.rows if name.startswith(below)]:
                del self.rows[name]
        self.publish(table + ".", EventType.OBJECT_DELETED, {"rowName": (ValueType.STRING, row.rstrip("."))})
        return RbusError.SUCCESS

    def publish(self, name: str, kind: int, data: Mapping[str, tuple[int, Any]]) -> int:
        with self.lock:
            receivers = [s for s in self.subscriptions if _matches(s.name, name)]
        for subscription in receivers:
            subscription.deliver(name, kind, {key: value for key, (_vtype, value) in data.items()})
        return RbusError.SUCCESS if receivers else RbusError.NOSUBSCRIBERS


# == the C API =====================================================================================


class LibrbusStandIn:
    """The functions of bindings/rbus.cdef, over cffi values, as ``ffi.dlopen(librbus)`` has them."""

    def __init__(self, bus: StandInBus) -> None:
        self._bus = bus
        self._heap = bus.heap

    # -- values ---------------------------------------------------------------------------------

    def _value(self, pointer: Any) -> _Value:
        value: _Value = self._heap.get(_key(pointer))
        return value

    def value_of(self, vtype: int, data: Any) -> int:
        """A new value key holding ``data`` (already of ``vtype``'s Python kind)."""
        value = _Value()
        self._store(value, vtype, data)
        return self._heap.new(value)

    def _store(self, value: _Value, vtype: int, data: Any) -> None:
        value.type, value.data, value.keep = vtype, data, None
        if vtype == ValueType.STRING:
            value.keep = ffi.new("char[]", data.encode())
        elif vtype == ValueType.DATETIME:
            value.keep = ffi.new("rbusDateTime_t *", data[0])  # a copy of the caller's struct
        elif vtype == ValueType.OBJECT:
            self._heap.retain(data)

    def python(self, key: int) -> tuple[int, Any]:
        """(type, Python value) of a value key: strings as str, datetimes as the struct copy."""
        value: _Value = self._heap.get(key)
        if value.type == ValueType.DATETIME:
            return value.type, value.keep
        return value.type, value.data

    def rbusValue_Init(self, out: Any) -> Any:
        out[0] = ffi.cast("rbusValue_t", self._heap.new(_Value()))
        return out[0]

    def rbusValue_Release(self, pointer: Any) -> None:
        released = self._heap.release(_key(pointer))
        if released is not None and released.type == ValueType.OBJECT:
            self.rbusObject_Release(ffi.cast("rbusObject_t", released.data))

    def rbusValue_GetType(self, pointer: Any) -> int:
        return self._value(pointer).type

    def _setter(vtype: int) -> Callable[[LibrbusStandIn, Any, Any], None]:  # type: ignore[misc]  # a class-body helper
        def set_value(self: LibrbusStandIn, pointer: Any, data: Any) -> None:
            self._store(self._value(pointer), vtype, _text(data) if vtype == ValueType.STRING else data)

        return set_value

    rbusValue_SetBoolean = _setter(ValueType.BOOLEAN)
    rbusValue_SetInt32 = _setter(ValueType.INT32)
    rbusValue_SetUInt32 = _setter(ValueType.UINT32)
    rbusValue_SetInt64 = _setter(ValueType.INT64)
    rbusValue_SetUInt64 = _setter(ValueType.UINT64)
    rbusValue_SetString = _setter(ValueType.STRING)
    rbusValue_SetTime = _setter(ValueType.DATETIME)

    def _getter(vtype: int) -> Callable[[LibrbusStandIn, Any, Any], int]:  # type: ignore[misc]
        def get_value(self: LibrbusStandIn, pointer: Any, out: Any) -> int:
            value = self._value(pointer)
            if value.type != vtype:
                return 1  # RBUS_VALUE_ERROR_TYPE
            out[0] = value.data
            return 0

        return get_value

    rbusValue_GetBooleanEx = _getter(ValueType.BOOLEAN)
    rbusValue_GetInt8Ex = _getter(ValueType.INT8)
    rbusValue_GetUInt8Ex = _getter(ValueType.UINT8)
    rbusValue_GetInt16Ex = _getter(ValueType.INT16)
    rbusValue_GetUInt16Ex = _getter(ValueType.UINT16)
    rbusValue_GetInt32Ex = _getter(ValueType.INT32)
    rbusValue_GetUInt32Ex = _getter(ValueType.UINT32)
    rbusValue_GetInt64Ex = _getter(ValueType.INT64)
    rbusValue_GetUInt64Ex = _getter(ValueType.UINT64)
    rbusValue_GetSingleEx = _getter(ValueType.SINGLE)
    rbusValue_GetDoubleEx = _getter(ValueType.DOUBLE)
    rbusValue_GetByteEx = _getter(ValueType.BYTE)

    def rbusValue_GetStringEx(self, pointer: Any, out: Any, length: Any) -> int:
        value = self._value(pointer)
        if value.type != ValueType.STRING:
            return 1
        out[0] = value.keep
        if length != ffi.NULL:
            length[0] = len(value.data.encode())
        return 0

    def rbusValue_GetTimeEx(self, pointer: Any, out: Any) -> int:
        value = self._value(pointer)
        if value.type != ValueType.DATETIME:
            return 1
        out[0] = value.keep
        return 0

    def rbusValue_GetBytesEx(self, pointer: Any, out: Any, length: Any) -> int:
        return 1  # this binding sends no bytes, and the stand-in's consumers none either

    def rbusValue_GetObjectEx(self, pointer: Any, out: Any) -> int:
        value = self._value(pointer)
        if value.type != ValueType.OBJECT:
            return 1
        out[0] = ffi.cast("rbusObject_t", value.data)
        return 0

    # -- properties -----------------------------------------------------------------------------

    def new_property(self, name: str, value_key: int = 0) -> int:
        if value_key:
            self._heap.retain(value_key)
        return self._heap.new(_Property(name, value_key, 0, ffi.new("char[]", name.encode())))

    def rbusProperty_Init(self, out: Any, name: Any, value: Any) -> Any:
        key = self.new_property(_text(name) or "", _key(value) if value != ffi.NULL else 0)
        out[0] = ffi.cast("rbusProperty_t", key)
        return out[0]

    def rbusProperty_Release(self, pointer: Any) -> None:
        key = _key(pointer)
        while key:
            released = self._heap.release(key)
            if released is None:
                return
            if released.value:
                self.rbusValue_Release(ffi.cast("rbusValue_t", released.value))
            key = released.next

    def rbusProperty_GetName(self, pointer: Any) -> Any:
        return self._heap.get(_key(pointer)).cname

    def rbusProperty_GetValue(self, pointer: Any) -> Any:
        return ffi.cast("rbusValue_t", self._heap.get(_key(pointer)).value)

    def rbusProperty_GetNext(self, pointer: Any) -> Any:
        return ffi.cast("rbusProperty_t", self._heap.get(_key(pointer)).next)

    def rbusProperty_SetValue(self, pointer: Any, value: Any) -> None:
        prop: _Property = self._heap.get(_key(pointer))
        self._heap.retain(_key(value))
        if prop.value:
            self.rbusValue_Release(ffi.cast("rbusValue_t", prop.value))
        prop.value = _key(value)

    def _property_setter(name: str) -> Callable[[LibrbusStandIn, Any, Any], None]:  # type: ignore[misc]
        def set_property(self: LibrbusStandIn, pointer: Any, data: Any) -> None:
            out = ffi.new("rbusValue_t *")
            self.rbusValue_Init(out)
            getattr(self, f"rbusValue_Set{name}")(out[0], data)
            self.rbusProperty_SetValue(pointer, out[0])
            self.rbusValue_Release(out[0])

        return set_property

    rbusProperty_SetBoolean = _property_setter("Boolean")
    rbusProperty_SetInt32 = _property_setter("Int32")
    rbusProperty_SetUInt32 = _property_setter("UInt32")
    rbusProperty_SetInt64 = _property_setter("Int64")
    rbusProperty_SetUInt64 = _property_setter("UInt64")
    rbusProperty_SetString = _property_setter("String")
    rbusProperty_SetTime = _property_setter("Time")

    def rbusProperty_Append(self, first: Any, prop: Any) -> None:
        key = _key(first)
        while (current := self._heap.get(key)).next:
            key = current.next
        self._heap.retain(_key(prop))
        current.next = _key(prop)

    # -- objects --------------------------------------------------------------------------------

    def rbusObject_Init(self, out: Any, name: Any) -> Any:
        out[0] = ffi.cast("rbusObject_t", self._heap.new(_Object()))
        return out[0]

    def rbusObject_Release(self, pointer: Any) -> None:
        released = self._heap.release(_key(pointer))
        if released is not None and released.first:
            self.rbusProperty_Release(ffi.cast("rbusProperty_t", released.first))

    def rbusObject_GetName(self, pointer: Any) -> Any:
        return ffi.NULL

    def rbusObject_GetProperties(self, pointer: Any) -> Any:
        return ffi.cast("rbusProperty_t", self._heap.get(_key(pointer)).first)

    def rbusObject_GetValue(self, pointer: Any, name: Any) -> Any:
        wanted = _text(name)
        for prop in self.properties(_key(pointer)):
            if prop.name == wanted:
                return ffi.cast("rbusValue_t", prop.value)
        return ffi.NULL

    def properties(self, object_key: int) -> list[_Property]:
        found = []
        key = self._heap.get(object_key).first
        while key:
            found.append(self._heap.get(key))
            key = found[-1].next
        return found

    def rbusObject_SetValue(self, pointer: Any, name: Any, value: Any) -> None:
        obj: _Object = self._heap.get(_key(pointer))
        wanted = _text(name) or ""
        for prop in self.properties(_key(pointer)):
            if prop.name == wanted:
                self.rbusProperty_SetValue(ffi.cast("rbusProperty_t", self._heap_key_of(prop)), value)
                return
        key = self.new_property(wanted, _key(value))
        if obj.first:
            self.rbusProperty_Append(ffi.cast("rbusProperty_t", obj.first), ffi.cast("rbusProperty_t", key))
            self._heap.release(key)
        else:
            obj.first = key

    def _heap_key_of(self, prop: _Property) -> int:
        with self._heap._lock:
            return next(key for key, (obj, _) in self._heap._objects.items() if obj is prop)

    def new_object(self, items: Mapping[str, tuple[int, Any]]) -> int:
        out = ffi.new("rbusObject_t *")
        self.rbusObject_Init(out, ffi.NULL)
        for name, (vtype, data) in items.items():
            value = self.value_of(vtype, data)
            self.rbusObject_SetValue(out[0], name.encode(), ffi.cast("rbusValue_t", value))
            self._heap.release(value)
        return _key(out[0])

    def decode_object(self, object_key: int) -> dict[str, tuple[int, Any]]:
        return {prop.name: self.python(prop.value) for prop in self.properties(object_key)}

    # -- the bus --------------------------------------------------------------------------------

    def rbusError_ToString(self, code: int) -> Any:
        return ffi.new("char[]", RbusError(code).name.encode())

    def rbus_open(self, out: Any, name: Any) -> int:
        component_name = _text(name) or ""
        with self._bus.lock:
            if component_name in self._bus.components:
                return RbusError.COMPONENT_NAME_DUPLICATE
            component = _Component(self._bus, component_name)
            self._bus.components[component_name] = component
        out[0] = component.pointer
        return RbusError.SUCCESS

    def _component(self, handle: Any) -> _Component:
        component: _Component = self._heap.get(_key(handle))
        return component

    def rbus_close(self, handle: Any) -> int:
        component = self._component(handle)
        with self._bus.lock:
            for table in [t for t in self._bus.rows if self._owner(t) is component]:
                del self._bus.rows[table]
            del self._bus.components[component.name]
        component.stop()
        self._heap.release(_key(handle))
        return RbusError.SUCCESS

    def _owner(self, concrete_table: str) -> _Component | None:
        template = self._bus.resolve(concrete_table)
        element = self._bus.element(template + "{i}.") if template is not None else None
        return element.component if element else None

    def rbus_regDataElements(self, handle: Any, count: int, elements: Any) -> int:
        component = self._component(handle)
        with self._bus.lock:
            names = [_text(elements[i].name) or "" for i in range(count)]
            if any(self._bus.element(name) or self._bus.element(name + "{i}.") for name in names):
                return RbusError.ELEMENT_NAME_DUPLICATE
            for i, name in enumerate(names):
                callbacks = ffi.new("rbusCallbackTable_t *", elements[i].cbTable)
                kind = ElementType(elements[i].type)
                # A table registered by its own name ("A.") makes the same tree as "A.{i}.".
                key = name + "{i}." if kind is ElementType.TABLE and not name.endswith("{i}.") else name
                component.elements[key] = _Element(name, kind, callbacks, component)
        return RbusError.SUCCESS

    def rbus_unregDataElements(self, handle: Any, count: int, elements: Any) -> int:
        component = self._component(handle)
        with self._bus.lock:
            for i in range(count):
                component.elements.pop(_text(elements[i].name) or "", None)
        return RbusError.SUCCESS

    def rbusTable_registerRow(self, handle: Any, table: Any, instance: int, alias: Any) -> int:
        return self._bus.register_row(self._component(handle), _text(table) or "", int(instance), _text(alias))

    def rbusTable_unregisterRow(self, handle: Any, row: Any) -> int:
        return self._bus.unregister_row(self._component(handle), _text(row) or "")

    def rbusEvent_Publish(self, handle: Any, event: Any) -> int:
        name = _text(event.name) or ""
        return self._bus.publish(name, int(event.type), self.decode_object(_key(event.data)))

    def rbusMethod_SendAsyncResponse(self, async_handle: Any, code: int, outputs: Any) -> int:
        answer: concurrent.futures.Future[tuple[int, int]] = self._heap.release(_key(async_handle))
        key = _key(outputs) if outputs != ffi.NULL else self.new_object({})
        if outputs != ffi.NULL:
            self._heap.retain(key)
        _error_outputs(self, key, int(code))
        answer.set_result((int(code), key))
        return RbusError.SUCCESS

    # The binding's own consumer calls (its watchdog's probe, the outbox's private method).

    def rbus_get(self, handle: Any, name: Any, out: Any) -> int:
        consumer = Consumer(self._bus, self._component(handle).name)
        code, found = consumer.get_keys([_text(name) or ""])
        if code == RbusError.SUCCESS:
            out[0] = ffi.cast("rbusValue_t", found[0][1])
        return code

    def rbus_getExt(self, handle: Any, count: int, names: Any, found_count: Any, first: Any) -> int:
        raise NotImplementedError("rbus_getExt: the provider does not call it")

    def rbusMethod_Invoke(self, handle: Any, method: Any, inputs: Any, out: Any) -> int:
        consumer = Consumer(self._bus, self._component(handle).name)
        code, outputs = consumer.invoke_keys(_text(method) or "", _key(inputs) if inputs != ffi.NULL else 0)
        out[0] = ffi.cast("rbusObject_t", outputs)
        return code


def _matches(subscribed: str, name: str) -> bool:
    """A subscription's name covers an event's: equal, or ``*`` standing for one row number."""
    if "*" not in subscribed:
        return subscribed == name
    return re.fullmatch(re.escape(subscribed).replace(r"\*", r"\d+"), name) is not None


def _error_outputs(lib: LibrbusStandIn, outputs: int, code: int) -> None:
    """A failed call's outputs carry error_code and error_string (added when missing)."""
    if code in (RbusError.SUCCESS, RbusError.ASYNC_RESPONSE):
        return
    pointer = ffi.cast("rbusObject_t", outputs)
    if lib.rbusObject_GetValue(pointer, b"error_code") == ffi.NULL:
        for name, vtype, data in (("error_code", ValueType.INT32, code), ("error_string", ValueType.STRING,
                                                                          RbusError(code).name)):  # fmt: skip
            value = lib.value_of(vtype, data)
            lib.rbusObject_SetValue(pointer, name.encode(), ffi.cast("rbusValue_t", value))
            lib.rbusValue_Release(ffi.cast("rbusValue_t", value))


# == another process's consumer calls ==============================================================


@dataclass
class Received:
    """One event as a subscriber's handler gets it."""

    name: str
    type: int
    data: dict[str, Any] = field(default_factory=dict)


class Consumer:
    """What a consumer (another component) asks of the bus; values as (ValueType, Python value).

    Datetimes come back as ``rbusDateTime_t`` structs, strings as str.
    """

    def __init__(self, bus: StandInBus, name: str = "contract-consumer") -> None:
        self.bus = bus
        self.lib = bus.lib
        self.name = name
        self._cname = ffi.new("char[]", name.encode())

    def _target(self, name: str) -> tuple[_Element, str] | int:
        """The element ``name`` reaches: a property, method or event, a table by its name
        ("A." for "A.{i}."), a wildcard name by its registered form."""
        if "*" in name:  # instance numbers and "*" alike stand for the rows
            template: str | None = re.sub(r"(?<=\.)(\*|\d+)(?=\.)", "{i}", name)
        else:
            template = self.bus.resolve(name)
        if not self.bus.routed(name):
            return RbusError.DESTINATION_NOT_FOUND
        if template is None:
            return RbusError.ELEMENT_DOES_NOT_EXIST
        element = self.bus.element(template) or (self.bus.element(template + "{i}.") if name.endswith(".") else None)
        if element is None:
            return RbusError.ELEMENT_DOES_NOT_EXIST
        return element, template

    # -- gets -----------------------------------------------------------------------------------

    def get_keys(self, names: list[str]) -> tuple[int, list[tuple[str, int]]]:
        """rbus_getExt: (code, [(name, value key)])."""
        found: list[tuple[str, int]] = []
        for name in names:
            if name.endswith(".") or "*" in name:
                code, more = self._get_many(name)
            else:
                code, more = self._get_one(name)
            if code != RbusError.SUCCESS:
                for _, key in found:
                    self.lib.rbusValue_Release(ffi.cast("rbusValue_t", key))
                return code, []
            found += more
        return RbusError.SUCCESS, found

    def get(self, names: list[str]) -> tuple[int, dict[str, tuple[int, Any]]]:
        code, found = self.get_keys(names)
        values = {}
        for name, key in found:
            values[name] = self.lib.python(key)
            self.lib.rbusValue_Release(ffi.cast("rbusValue_t", key))
        return code, values

    def _call_get(self, element: _Element, name: str) -> tuple[int, int]:
        def work() -> tuple[int, int]:
            prop = self.lib.new_property(name)
            options = ffi.new("rbusGetHandlerOptions_t *")
            options.requestingComponent = self._cname
            code = int(
                element.callbacks.getHandler(element.component.pointer, ffi.cast("rbusProperty_t", prop), options)
            )
            value = self.bus.heap.get(prop).value
            if value:
                self.bus.heap.retain(value)
            self.lib.rbusProperty_Release(ffi.cast("rbusProperty_t", prop))
            return code, value

        result: tuple[int, int] = element.component.call(work)
        return result

    def _get_one(self, name: str) -> tuple[int, list[tuple[str, int]]]:
        target = self._target(name)
        if isinstance(target, int):
            return target, []
        element, _ = target
        if element.callbacks.getHandler == ffi.NULL:
            return RbusError.INVALID_OPERATION, []
        code, value = self._call_get(element, name)
        return code, [(name, value)] if code == RbusError.SUCCESS else []

    def _get_many(self, name: str) -> tuple[int, list[tuple[str, int]]]:
        if "*" in name:
            head, _, tail = name.partition("*")
            template = self.bus.resolve(head)
            if template is None or self.bus.element(template + "{i}.") is None:
                return (RbusError.ELEMENT_DOES_NOT_EXIST if template is None else RbusError.ACCESS_NOT_ALLOWED), []
            pattern = re.compile(
                re.escape(head) + r"\d+" + re.escape(tail) + ("" if tail.endswith(".") or not tail else "$")
            )
            names = [n for n in self.bus.expand(head) if pattern.match(n)]
        else:
            if not self.bus.routed(name):
                return RbusError.DESTINATION_NOT_FOUND, []
            if self.bus.resolve(name) is None:
                return RbusError.ELEMENT_DOES_NOT_EXIST, []
            names = self.bus.expand(name)
            if not names and not any(n.startswith(self.bus.resolve(name) or "?") for n, _ in self.bus._all_elements()):
                return RbusError.ELEMENT_DOES_NOT_EXIST, []
        found = []
        for concrete in names:
            target = self._target(concrete)
            if isinstance(target, int):
                continue
            code, value = self._call_get(target[0], concrete)
            if code == RbusError.SUCCESS:  # a failing property is left out of a partial get
                found.append((concrete, value))
        return RbusError.SUCCESS, found

    # -- sets -----------------------------------------------------------------------------------

    def set(self, values: Mapping[str, tuple[int, Any]], commit: bool = True) -> int:
        """rbus_setMulti: one request per provider, the last property with commit."""
        items = list(values.items())
        for index, (name, (vtype, data)) in enumerate(items):
            target = self._target(name)
            if isinstance(target, int):
                return target
            element, _ = target
            if element.callbacks.setHandler == ffi.NULL:
                return RbusError.NOT_WRITABLE
            last = commit and index == len(items) - 1

            def work(element: _Element = element, name: str = name, vtype: int = vtype, data: Any = data,
                     last: bool = last) -> int:  # fmt: skip
                value = self.lib.value_of(vtype, data)
                prop = self.lib.new_property(name, value)
                self.lib.rbusValue_Release(ffi.cast("rbusValue_t", value))
                options = ffi.new("rbusSetHandlerOptions_t *")
                options.commit, options.sessionId, options.requestingComponent = last, 0, self._cname
                try:
                    return int(element.callbacks.setHandler(element.component.pointer,
                                                            ffi.cast("rbusProperty_t", prop), options))  # fmt: skip
                finally:
                    self.lib.rbusProperty_Release(ffi.cast("rbusProperty_t", prop))

            code: int = element.component.call(work)
            if code != RbusError.SUCCESS:
                return code
        return RbusError.SUCCESS

    # -- tables ---------------------------------------------------------------------------------

    def add_row(self, table: str, alias: str | None = None) -> tuple[int, int]:
        """rbusTable_addRow: (code, instance number)."""
        if not table.endswith("."):
            return RbusError.INVALID_INPUT, 0
        template = self.bus.resolve(table)
        element = self.bus.element(template + "{i}.") if template is not None else None
        if element is None:  # an object that is not a table has no add-row handler
            known = template is not None and any(name.startswith(template) for name, _ in self.bus._all_elements())
            return (RbusError.INVALID_OPERATION if known else RbusError.ELEMENT_DOES_NOT_EXIST), 0
        if element.callbacks.tableAddRowHandler == ffi.NULL:
            return RbusError.INVALID_OPERATION, 0

        def work() -> tuple[int, int]:
            instance = ffi.new("uint32_t *")
            alias_arg = ffi.new("char[]", alias.encode()) if alias else ffi.NULL
            code = int(element.callbacks.tableAddRowHandler(element.component.pointer, table.encode(), alias_arg,
                                                            instance))  # fmt: skip
            if code == RbusError.SUCCESS:
                self.bus.register_row(element.component, table, int(instance[0]), alias)
            return code, int(instance[0])

        result: tuple[int, int] = element.component.call(work)
        return result

    def remove_row(self, row: str) -> int:
        template = self.bus.resolve(row.rstrip(".") + ".")
        element = self.bus.element(template) if template is not None else None
        if element is None or element.type is not ElementType.TABLE:
            return RbusError.ELEMENT_DOES_NOT_EXIST
        if element.callbacks.tableRemoveRowHandler == ffi.NULL:
            return RbusError.INVALID_OPERATION

        def work() -> int:
            code = int(element.callbacks.tableRemoveRowHandler(element.component.pointer, row.encode()))
            if code == RbusError.SUCCESS:
                self.bus.unregister_row(element.component, row)
            return code

        result: int = element.component.call(work)
        return result

    def published(self, component: str) -> list[str]:
        """rbus_discoverComponentDataElements (all levels): the component's own name (its
        route), then the names it registered, tables without their trailing dot."""
        with self.bus.lock:
            elements = self.bus.components[component].elements.values()
            return [component, *(element.name.removesuffix(".") for element in elements)]

    def row_names(self, table: str) -> tuple[int, list[tuple[int, str]]]:
        """rbusTable_getRowNames: (code, [(instance, alias)])."""
        template = self.bus.resolve(table)
        if template is None or self.bus.element(template + "{i}.") is None:
            return RbusError.ELEMENT_DOES_NOT_EXIST, []
        with self.bus.lock:
            return RbusError.SUCCESS, sorted(self.bus.rows.get(table, {}).items())

    # -- methods --------------------------------------------------------------------------------

    def invoke_keys(self, method: str, inputs: int) -> tuple[int, int]:
        """rbusMethod_Invoke: (code, outputs object key); waits for an asynchronous answer."""
        target = self._target(method)
        if isinstance(target, int) or target[0].type is not ElementType.METHOD:
            outputs = self.lib.new_object({})
            code = target if isinstance(target, int) else RbusError.INVALID_OPERATION
            _error_outputs(self.lib, outputs, code)
            return code, outputs
        element = target[0]
        answer: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()

        def work() -> None:
            handler = ffi.cast("rbusMethodHandler_t", element.callbacks.methodHandler)
            outputs = self.lib.new_object({})
            in_key = inputs or self.lib.new_object({})
            if inputs:
                self.bus.heap.retain(in_key)
            async_handle = ffi.cast("rbusMethodAsyncHandle_t", self.bus.heap.new(answer))
            code = int(handler(element.component.pointer, method.encode(), ffi.cast("rbusObject_t", in_key),
                               ffi.cast("rbusObject_t", outputs), async_handle))  # fmt: skip
            self.lib.rbusObject_Release(ffi.cast("rbusObject_t", in_key))
            if code == RbusError.ASYNC_RESPONSE:
                self.lib.rbusObject_Release(ffi.cast("rbusObject_t", outputs))
                return
            self.bus.heap.release(_key(async_handle))
            _error_outputs(self.lib, outputs, code)
            answer.set_result((code, outputs))

        element.component.call(work)
        return answer.result(CALL_TIMEOUT)

    def invoke(self, method: str, inputs: Mapping[str, tuple[int, Any]]) -> tuple[int, dict[str, tuple[int, Any]]]:
        in_key = self.lib.new_object(inputs) if inputs else 0
        try:
            code, out_key = self.invoke_keys(method, in_key)
        finally:
            if in_key:
                self.lib.rbusObject_Release(ffi.cast("rbusObject_t", in_key))
        outputs = self.lib.decode_object(out_key)
        self.lib.rbusObject_Release(ffi.cast("rbusObject_t", out_key))
        return code, outputs

    def invoke_async(self, method: str, inputs: Mapping[str, tuple[int, Any]],
                     done: Callable[[int, dict[str, tuple[int, Any]]], None]) -> None:  # fmt: skip
        """rbusMethod_InvokeAsync: ``done(code, outputs)`` on a thread of the consumer's."""
        threading.Thread(target=lambda: done(*self.invoke(method, inputs)), daemon=True).start()

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self, name: str, handler: Callable[[Received], None]) -> int:
        """rbusEvent_Subscribe: the element's subscribe handler is told, then events flow."""
        target = self._target(name)
        if isinstance(target, int):
            return target
        element, _ = target
        subscription = _Subscription(name, lambda event, kind, data: handler(Received(event, kind, data)))
        code = self._tell(element, name, SubscribeAction.SUBSCRIBE)
        if code == RbusError.SUCCESS:
            with self.bus.lock:
                self.bus.subscriptions.append(subscription)
        return code

    def unsubscribe(self, name: str) -> None:
        with self.bus.lock:
            self.bus.subscriptions = [s for s in self.bus.subscriptions if s.name != name]
        target = self._target(name)
        if not isinstance(target, int):
            self._tell(target[0], name, SubscribeAction.UNSUBSCRIBE)

    def _tell(self, element: _Element, name: str, action: SubscribeAction) -> int:
        if element.callbacks.eventSubHandler == ffi.NULL:
            return RbusError.SUCCESS

        def work() -> int:
            auto = ffi.new("bool *")
            return int(element.callbacks.eventSubHandler(element.component.pointer, action, name.encode(), ffi.NULL,
                                                         0, auto))  # fmt: skip

        result: int = element.component.call(work)
        return result
