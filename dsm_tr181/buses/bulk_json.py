"""A Get's values as one JSON document: ``{"<object path>": {"<parameter>": "<TR-106 text>", ...}, ...}``.

D-Bus's GetBulk answers it (:mod:`~dsm_tr181.buses.dbus_bulk`), and so does the control
socket's ``get`` for clients that ask for objects (``dsmcli``). The work is split so that
the asyncio loop is blocked only as long as the tree must be read: :func:`snapshot`, on
the loop, copies the values out of the DataModel's views (they change with the tree);
:class:`BulkEncoder` turns that copy into the JSON document on another thread.

Speed. A partial path of a full tree has ~10^5 values; ``json.dumps`` after a per-value
conversion to text takes 70 ms or more at 1000 DUs. Here no Python byte code runs per
value (~35 ms):

- the snapshot is five flat lists (paths, schemas, sizes, names, values) filled by C
  iterators, not a dict per object. Besides being quicker to make, it allocates almost
  nothing the cyclic GC tracks: 10^4 fresh containers trigger collections of the whole
  heap (~15 ms at 1000 DUs), which would stall the loop (and, on any thread, hold the GIL);
- the objects of one schema (every ExecutionUnit row, ...) are encoded together, column
  by column: each parameter's values go through C functions only (json's string escaper,
  ``str.join``, a cached dateTime formatter) into a per-schema ``%``-template that holds
  the parameter names. An object with only some of its parameters (parameter or search
  paths), or with them in another order, is encoded with ``json.dumps``.

Strings are sent as Get sends them: NUL as U+FFFD, an unpaired surrogate as "?".
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from itertools import accumulate, chain
from operator import attrgetter, methodcaller
from typing import Any

from dsm_tr181.schema.model import Object
from dsm_tr181.schema.types import BaseType, DataType, Value, format_datetime
from dsm_tr181.tree.results import ResolvedObject

# One value as a quoted JSON string (C; json.encoder's own escaper, non-ASCII kept).
_quote: Callable[[str], str] = json.encoder.encode_basestring
_BOOLEAN = {True: '"true"', False: '"false"'}.__getitem__
_INTEGERS = {BaseType.INT, BaseType.UNSIGNED_INT, BaseType.LONG, BaseType.UNSIGNED_LONG}
# A JSON "\u0000" escape, not one preceded by an escaped backslash ("\\u0000").
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_NUL_REPLACEMENT = b"\\1" + "\ufffd".encode()  # the escaped backslashes, then U+FFFD
_PATH, _SCHEMA, _PARAMS = attrgetter("path"), attrgetter("schema"), attrgetter("params")
_VALUES = methodcaller("values")

_PIECE = 512  # objects per piece of the document

Column = Callable[[Iterable[Any]], Iterator[Any]]


@dataclass(frozen=True)
class Snapshot:
    """The objects of a Get, in its order; object i has ``sizes[i]`` parameters, whose
    names and values follow those of the objects before it in ``names`` and ``values``."""

    paths: list[str]
    schemas: list[Object]
    sizes: list[int]
    names: list[str]
    values: list[Value]


@contextmanager
def collections_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block: for reading a large part of the tree.

    Resolving a whole tree makes two containers per object (ResolvedObject, its view), ~3·10^4
    at 1000 DUs: enough to set off ~40 collections, now and then one of the whole heap (its
    worst case measured here 0.5 s, against 0.26 s for the whole read without). They are
    garbage once copied, so nothing is left for the collector afterwards. Reads run on the
    loop thread, one at a time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def snapshot(objects: Sequence[ResolvedObject]) -> Snapshot:
    """Copy the values of a Get's objects (call it on the loop)."""
    views = list(map(_PARAMS, objects))
    return Snapshot(
        list(map(_PATH, objects)),
        list(map(_SCHEMA, objects)),
        list(map(len, views)),
        list(chain.from_iterable(views)),
        list(chain.from_iterable(map(_VALUES, views))),
    )


class BulkEncoder:
    """Encodes snapshots; keeps one template per schema object (the schema never changes).

    ``flat``: the document is ``{"<parameter path>": "<text>", ...}`` instead (the control
    socket's plain ``get``), made the same way. Use it from one thread at a time.
    """

    def __init__(self, flat: bool = False) -> None:
        self.flat = flat
        self._templates: dict[str, _Template] = {}

    def encode(self, objects: Snapshot) -> bytes:
        """The JSON document as UTF-8."""
        return b"".join(self.pieces(objects))

    def pieces(self, objects: Snapshot) -> list[bytes]:
        """The JSON document as UTF-8, in pieces of a few hundred objects: the text of the
        objects is freed as it is encoded, so memory holds about one copy of the document."""
        bodies = self._bodies(unique(objects))
        if not bodies:
            return [b"{}"]
        # Braces added to the end bodies, not around the joined text: no copy of megabytes.
        bodies[0] = "{" + bodies[0]
        bodies[-1] += "}"
        return _utf8_pieces(bodies)

    def members(self, objects: Snapshot) -> list[bytes]:
        """The document's members for ``objects``, comma-separated, without braces: one part
        of a document made in parts. Each object path must appear once in all the parts."""
        return _utf8_pieces(self._bodies(objects))

    def _bodies(self, objects: Snapshot) -> list[str]:
        """The text of each object (flat: of its parameters), none for a flat object without any."""
        names, values = objects.names, objects.values
        bodies = [""] * len(objects.paths)
        # schema path -> its template, and the objects it fits: places, paths, values
        groups: dict[str, tuple[_Template, list[int], list[str], list[Value]]] = {}
        end = 0
        for index, (path, schema, size) in enumerate(zip(objects.paths, objects.schemas, objects.sizes, strict=True)):
            start, end = end, end + size
            group = groups.get(schema.path)
            if group is None:
                group = groups[schema.path] = (self._template(schema), [], [], [])
            if names[start:end] == group[0].names:
                group[1].append(index)
                group[2].append(path)
                group[3].extend(values[start:end])
            else:
                bodies[index] = _other_object(path, schema, names[start:end], values[start:end], self.flat)
        for template, indexes, paths, rows in groups.values():
            for index, body in zip(indexes, template.bodies(paths, rows), strict=True):
                bodies[index] = body
        return [body for body in bodies if body] if self.flat else bodies

    def _template(self, schema: Object) -> _Template:
        template = self._templates.get(schema.path)
        if template is None:
            template = self._templates[schema.path] = _Template.of(schema, self.flat)
        return template


def _utf8_pieces(bodies: list[str]) -> list[bytes]:
    """``bodies`` joined by commas, as UTF-8 in pieces (ending in a comma but the last)."""
    pieces = []
    while bodies:
        text = ",".join(bodies[:_PIECE])
        del bodies[:_PIECE]
        data = (text + "," if bodies else text).encode(errors="replace")
        # b"\\" is a memchr: the search for the escape runs only if anything was escaped.
        if b"\\" in data and b"\\u0000" in data:
            data = _NUL_ESCAPE.sub(_NUL_REPLACEMENT, data)
        pieces.append(data)
    return pieces


@dataclass(frozen=True)
class _Template:
    """``"<path>":{"<name>":<value>,...}`` (flat: ``"<path><name>":<value>,...``) for the
    objects of one schema that carry every parameter, in the schema's order."""

    names: list[str]
    text: str  # the quoted path, then one slot per parameter (flat: the escaped path before each)
    columns: tuple[Column | None, ...]  # None: the value goes into its slot as it is
    flat: bool

    @classmethod
    def of(cls, schema: Object, flat: bool) -> _Template:
        slots = []
        columns = []
        for name, parameter in schema.parameters.items():
            slot, column = _column(parameter.type)
            key = '"%s' + _quote(name)[1:].replace("%", "%%") if flat else _quote(name).replace("%", "%%")
            slots.append(key + ":" + slot)
            columns.append(column)
        text = ",".join(slots) if flat else "%s:{" + ",".join(slots) + "}"
        return cls(list(schema.parameters), text, tuple(columns), flat)

    def bodies(self, paths: list[str], rows: list[Value]) -> Iterator[str]:
        """The objects at ``paths`` whose values follow one another in ``rows``."""
        width = len(self.columns)
        if not width and self.flat:
            return iter([""] * len(paths))
        quoted = list(map(_quote, paths))
        inner = [text[1:-1] for text in quoted] if self.flat else quoted
        columns: list[Iterable[Any]] = [] if self.flat else [quoted]
        for offset, convert in enumerate(self.columns):
            column = rows[offset::width]
            if self.flat:
                columns.append(inner)
            columns.append(convert(column) if convert else column)
        return map(self.text.__mod__, zip(*columns, strict=True))


def _column(data_type: DataType) -> tuple[str, Column | None]:
    """The template slot of a value of ``data_type`` and what turns values into its text."""
    if data_type.list is None:
        if data_type.base is BaseType.STRING:
            return "%s", partial(map, _quote)
        if data_type.base in _INTEGERS:
            return '"%d"', None
        if data_type.base is BaseType.BOOLEAN:
            return "%s", partial(map, _BOOLEAN)
        if data_type.base is BaseType.DATETIME:
            return '"%s"', partial(map, _datetime)
    elif data_type.base is BaseType.STRING:
        return "%s", lambda values: map(_quote, map(",".join, values))
    return "%s", lambda values: map(_quote, map(data_type.format, values))


@lru_cache(maxsize=1024)
def _datetime(value: datetime) -> str:
    # Few distinct values (mostly 0001-01-01T00:00:00Z, "unknown"): a cache hit is C.
    return format_datetime(value)


def _other_object(path: str, schema: Object, names: list[str], values: list[Value], flat: bool) -> str:
    types = schema.parameters
    text = {name: types[name].type.format(value) for name, value in zip(names, values, strict=True)}
    if flat:
        return ",".join(_quote(path + name) + ":" + _quote(value) for name, value in text.items())
    return _quote(path) + ":" + json.dumps(text, ensure_ascii=False, separators=(",", ":"))


def unique(objects: Snapshot) -> Snapshot:
    """One entry per object path, at its first place, with the parameters of every entry
    (two paths of one Get may name the same object)."""
    if len(set(objects.paths)) == len(objects.paths):
        return objects
    merged: dict[str, tuple[Object, dict[str, Value]]] = {}
    ends = accumulate(objects.sizes)
    start = 0
    for path, schema, end in zip(objects.paths, objects.schemas, ends, strict=True):
        params = dict(zip(objects.names[start:end], objects.values[start:end], strict=True))
        merged.setdefault(path, (schema, {}))[1].update(params)
        start = end
    held = [params for _, params in merged.values()]
    return Snapshot(
        list(merged),
        [schema for schema, _ in merged.values()],
        list(map(len, held)),
        list(chain.from_iterable(held)),
        list(chain.from_iterable(map(_VALUES, held))),
    )
