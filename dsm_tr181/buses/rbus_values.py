"""TR-106 values as rbus carries them.

rbus has native booleans, 32/64-bit integers, date-times and strings; every other
TR-106 type (lists, base64, hexBinary) travels as its TR-106 text, as CCSP components
do. These helpers hold that one rule for gets, method outputs and event arguments.
"""

from __future__ import annotations

from typing import Any

from dsm_tr181.buses.rbus_ffi import TR106_TO_RBUS, Typed
from dsm_tr181.schema.types import DataType, Value


def carried_type(dtype: DataType) -> str:
    """The TR-106 type name a value of ``dtype`` is published as ("string" for text forms)."""
    return dtype.base.value if _native(dtype) else "string"


def to_rbus(dtype: DataType, value: Value) -> Any:
    """``value`` as the Python value rbus_ffi stores for :func:`carried_type`."""
    return value if _native(dtype) else dtype.format(value)


def typed(dtype: DataType, value: Value) -> Typed:
    """``(value, type name)`` for rbus objects (method outputs, event data)."""
    return (value, dtype.base.value) if _native(dtype) else (dtype.format(value), "string")


def _native(dtype: DataType) -> bool:
    return dtype.list is None and dtype.base.value in TR106_TO_RBUS
