"""The supported data model: TR-106 types and the objects, parameters, commands and events."""

from dsm_tr181.schema.loader import SchemaError, load_schema
from dsm_tr181.schema.model import Access, ArgumentObject, Command, Event, Object, Parameter, Schema, UniqueKey
from dsm_tr181.schema.types import BaseType, DataType, PathRef, RefType, Value

__all__ = [
    "Access",
    "ArgumentObject",
    "BaseType",
    "Command",
    "DataType",
    "Event",
    "Object",
    "Parameter",
    "PathRef",
    "RefType",
    "Schema",
    "SchemaError",
    "UniqueKey",
    "Value",
    "load_schema",
]
