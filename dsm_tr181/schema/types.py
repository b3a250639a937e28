"""TR-106 data types: parse, check and format parameter values.

A :class:`DataType` is a base type (string, boolean, int, ...) with its facets (sizes,
ranges, enumerations, patterns, list, pathRef) already merged along the named
data-type chain (``_AliasUSP`` → ``_AliasCommon`` → string). Values are held typed:

=================  ==========================================
string, URL, ...   ``str``
boolean            ``bool``
int, long, ...     ``int``
dateTime           ``datetime`` (aware, UTC)
base64, hexBinary  ``bytes``
list-valued        ``tuple`` of item values
=================  ==========================================

Every failure is a :class:`~dsm_tr181.errors.Fault`: ``INVALID_TYPE`` when the text is
not of the type at all, ``INVALID_VALUE`` when a facet refuses it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from dsm_tr181.errors import Fault, FaultCode

Scalar = str | bool | int | datetime | bytes
Value = Scalar | tuple[Scalar, ...]


class BaseType(enum.Enum):
    STRING = "string"
    BOOLEAN = "boolean"
    INT = "int"
    UNSIGNED_INT = "unsignedInt"
    LONG = "long"
    UNSIGNED_LONG = "unsignedLong"
    DATETIME = "dateTime"
    BASE64 = "base64"
    HEX_BINARY = "hexBinary"


INTEGER_BOUNDS: dict[BaseType, tuple[int, int]] = {
    BaseType.INT: (-(2**31), 2**31 - 1),
    BaseType.UNSIGNED_INT: (0, 2**32 - 1),
    BaseType.LONG: (-(2**63), 2**63 - 1),
    BaseType.UNSIGNED_LONG: (0, 2**64 - 1),
}

_PYTHON_TYPES: dict[BaseType, type] = {
    BaseType.STRING: str,
    BaseType.BOOLEAN: bool,
    BaseType.DATETIME: datetime,
    BaseType.BASE64: bytes,
    BaseType.HEX_BINARY: bytes,
}

UNKNOWN_TIME = datetime(1, 1, 1, tzinfo=UTC)
_DATETIME_RE = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d{2}:\d{2})?"
)
_INT_RE = re.compile(r"[+-]?\d+")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Data types whose values TR-181 requires to be non-empty and to start with a letter.
ALIAS_TYPES = frozenset({"Alias", "_AliasCommon", "_AliasUSP", "_AliasCWMP"})


@dataclass(frozen=True)
class Size:
    min: int | None = None
    max: int | None = None

    def allows(self, length: int) -> bool:
        return (self.min is None or length >= self.min) and (self.max is None or length <= self.max)

    def __str__(self) -> str:
        return f"{self.min or 0}..{'' if self.max is None else self.max}"


@dataclass(frozen=True)
class Range:
    min: int | None = None
    max: int | None = None
    step: int = 1

    def allows(self, value: int) -> bool:
        if self.min is not None and value < self.min:
            return False
        if self.max is not None and value > self.max:
            return False
        return self.step <= 1 or (value - (self.min or 0)) % self.step == 0

    def __str__(self) -> str:
        text = f"{'' if self.min is None else self.min}..{'' if self.max is None else self.max}"
        return text if self.step <= 1 else f"{text} step {self.step}"


@dataclass(frozen=True)
class ListFacet:
    min_items: int = 0
    max_items: int | None = None
    sizes: tuple[Size, ...] = ()  # length of the whole comma-separated string


class RefType(enum.Enum):
    STRONG = "strong"
    WEAK = "weak"


@dataclass(frozen=True)
class PathRef:
    ref_type: RefType
    # Absolute schema paths ("Device.SoftwareModules.ExecEnv.") the reference may
    # point below; empty means anywhere.
    target_parents: tuple[str, ...] = ()
    target_type: str = "any"  # any, parameter, object, single, row
    target_data_type: str = "any"


@dataclass(frozen=True)
class DataType:
    base: BaseType
    name: str = ""  # named data type (UUID, URL, _AliasUSP, ...), "" for an anonymous one
    sizes: tuple[Size, ...] = ()
    ranges: tuple[Range, ...] = ()
    enumerations: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    list: ListFacet | None = None
    path_ref: PathRef | None = None
    units: str = ""
    chain: tuple[str, ...] = field(default=(), compare=False)  # named types it derives from

    # -- text <-> value --------------------------------------------------------------

    def parse(self, text: str) -> Value:
        """Parse wire text (TR-106 encoding) and validate it against every facet."""
        if not isinstance(text, str):
            raise Fault(FaultCode.INVALID_TYPE, f"expected a string encoding, got {type(text).__name__}")
        if self.list is not None:
            self._check_list_text(text)
            items = split_list(text)
            return self._check_items(tuple(self._parse_scalar(item) for item in items))
        return self._check_scalar(self._parse_scalar(text))

    def check(self, value: Value) -> Value:
        """Validate a typed value set by the product's own code; return it normalised."""
        simple = self._simple  # the common case, kept cheap
        if simple is not None and type(value) is simple[0] and (simple[1] is None or simple[1](value)):
            return value
        if isinstance(value, str) and (self.list is not None or self.base is not BaseType.STRING):
            return self.parse(value)
        if self.list is not None:
            if not isinstance(value, (tuple, list)):
                raise Fault(FaultCode.INVALID_TYPE, f"expected a list, got {type(value).__name__}")
            items = tuple(self._coerce_scalar(item) for item in value)
            self._check_list_text(self.format(items))
            return self._check_items(items)
        return self._check_scalar(self._coerce_scalar(value))

    def format(self, value: Value) -> str:
        if self.list is not None:
            assert isinstance(value, tuple)
            return ",".join(self._format_scalar(item) for item in value)
        return self._format_scalar(value)

    def default_value(self) -> Value:
        """The value a parameter has before anything sets it (TR-106 "empty" values)."""
        if self.list is not None:
            return ()
        if self.base in INTEGER_BOUNDS:
            return self._lowest_int()
        return {
            BaseType.STRING: "",
            BaseType.BOOLEAN: False,
            BaseType.DATETIME: UNKNOWN_TIME,
            BaseType.BASE64: b"",
            BaseType.HEX_BINARY: b"",
        }[self.base]

    def describe(self) -> str:
        """A short human description ("unsignedInt[0..65535]", "list of string(256)")."""
        text = self.name or self.base.value
        if self.sizes:
            text += "(" + ",".join(str(s) for s in self.sizes) + ")"
        if self.ranges:
            text += "[" + ",".join(str(r) for r in self.ranges) + "]"
        return f"list of {text}" if self.list is not None else text

    def item_type(self) -> DataType:
        """The type of one list item (the type itself for scalars)."""
        return replace(self, list=None) if self.list is not None else self

    # -- scalars -----------------------------------------------------------------------

    def _parse_scalar(self, text: str) -> Scalar:
        base = self.base
        if base is BaseType.STRING:
            return text
        if base is BaseType.BOOLEAN:
            if text in ("true", "1"):
                return True
            if text in ("false", "0"):
                return False
            raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not a boolean (true, false, 1 or 0)")
        if base in INTEGER_BOUNDS:
            if not _INT_RE.fullmatch(text):
                raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not an integer ({base.value})")
            return int(text)
        if base is BaseType.DATETIME:
            return parse_datetime(text)
        if base is BaseType.HEX_BINARY:
            if not _HEX_RE.fullmatch(text):
                raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not hexBinary (an even number of hex digits)")
            return bytes.fromhex(text)
        if not _B64_RE.fullmatch(text) or len(text) % 4:
            raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not base64")
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not base64: {exc}") from None

    def _coerce_scalar(self, value: object) -> Scalar:
        expected = self._python_type
        if isinstance(value, str) and expected is not str:
            return self._parse_scalar(value)
        if isinstance(value, str) and type(value) is not str:
            value = str(value)  # a StrEnum member (dsm_tr181.lcm.states) is kept as plain text
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise Fault(FaultCode.INVALID_TYPE, f"{value!r} is not a {self.base.value}")
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value  # type: ignore[return-value]

    @cached_property
    def _python_type(self) -> type:
        return _PYTHON_TYPES.get(self.base, int)

    @cached_property
    def _int_bounds(self) -> tuple[int, int] | None:
        return INTEGER_BOUNDS.get(self.base)

    def _check_scalar(self, value: Scalar) -> Scalar:
        bounds = self._int_bounds
        if bounds is not None:
            assert isinstance(value, int)
            low, high = bounds
            if not low <= value <= high:
                raise Fault(FaultCode.INVALID_VALUE, f"{value} is outside the {self.base.value} range {low}..{high}")
            if self.ranges and not any(r.allows(value) for r in self.ranges):
                allowed = ", ".join(str(r) for r in self.ranges)
                raise Fault(FaultCode.INVALID_VALUE, f"{value} is outside the allowed range {allowed}")
            return value
        if isinstance(value, (str, bytes)):
            self._check_size(len(value), value)
        if isinstance(value, str):
            self._check_string(value)
        return value

    def _check_size(self, length: int, value: str | bytes) -> None:
        if self.sizes and not any(s.allows(length) for s in self.sizes):
            allowed = ", ".join(str(s) for s in self.sizes)
            unit = "bytes" if isinstance(value, bytes) else "characters"
            raise Fault(FaultCode.INVALID_VALUE, f"length {length} {unit} is outside the allowed size {allowed}")

    def _check_string(self, value: str) -> None:
        if self.enumerations and value not in self.enumerations:
            allowed = ", ".join(self.enumerations)
            raise Fault(FaultCode.INVALID_VALUE, f"{value!r} is not one of the enumerated values: {allowed}")
        if self._compiled_patterns and not any(p.fullmatch(value) for p in self._compiled_patterns):
            raise Fault(FaultCode.INVALID_VALUE, f"{value!r} does not match the {self.name or 'pattern'} syntax")
        if self._is_alias and not (value[:1].isascii() and value[:1].isalpha()):
            raise Fault(FaultCode.INVALID_VALUE, f"alias {value!r} must be non-empty and start with a letter")

    def _format_scalar(self, value: Scalar) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            return format_datetime(value)
        if isinstance(value, bytes):
            return value.hex() if self.base is BaseType.HEX_BINARY else base64.b64encode(value).decode()
        return str(value)

    def _lowest_int(self) -> int:
        low, high = INTEGER_BOUNDS[self.base]
        candidates = [r.min for r in self.ranges if r.min is not None]
        floor = max(low, min(candidates)) if candidates else low
        return 0 if floor <= 0 <= high else floor

    # -- lists -------------------------------------------------------------------------

    def _check_list_text(self, text: str) -> None:
        assert self.list is not None
        if self.list.sizes and not any(s.allows(len(text)) for s in self.list.sizes):
            allowed = ", ".join(str(s) for s in self.list.sizes)
            raise Fault(FaultCode.INVALID_VALUE, f"list length {len(text)} is outside the allowed size {allowed}")

    def _check_items(self, items: tuple[Scalar, ...]) -> tuple[Scalar, ...]:
        assert self.list is not None
        count = len(items)
        if count < self.list.min_items or (self.list.max_items is not None and count > self.list.max_items):
            most = "unbounded" if self.list.max_items is None else self.list.max_items
            raise Fault(FaultCode.INVALID_VALUE, f"{count} list items, allowed {self.list.min_items}..{most}")
        return tuple(self._check_scalar(item) for item in items)

    @cached_property
    def _simple(self) -> tuple[type, Callable[[Any], bool] | None] | None:
        """(type, test) when a value of that exact type needs only ``test`` (None: nothing):
        facet-free booleans and dateTimes, integers with a plain range, strings with only sizes."""
        if self.list is not None or self.enumerations or self.patterns or self._is_alias:
            return None
        if self.base is BaseType.BOOLEAN:
            return bool, None
        if self.base is BaseType.STRING:
            sizes = self.sizes
            return str, (lambda v: any(s.allows(len(v)) for s in sizes)) if sizes else None
        bounds = self._int_bounds
        if bounds is not None and len(self.ranges) <= 1:
            low, high = bounds
            if self.ranges:
                only = self.ranges[0]
                if only.step > 1:
                    return None
                low = low if only.min is None else max(low, only.min)
                high = high if only.max is None else min(high, only.max)
            return int, lambda v: low <= v <= high
        return None

    @cached_property
    def _is_alias(self) -> bool:
        return bool(ALIAS_TYPES.intersection(self.chain))

    @cached_property
    def _compiled_patterns(self) -> tuple[re.Pattern[str], ...]:
        # XSD patterns are implicitly anchored; the BBF ones use the syntax Python shares.
        return tuple(re.compile(p) for p in self.patterns)


def split_list(text: str) -> list[str]:
    """TR-106 comma-separated list: items are trimmed; "" is the empty list."""
    if text.strip() == "":
        return []
    return [item.strip() for item in text.split(",")]


def parse_datetime(text: str) -> datetime:
    match = _DATETIME_RE.fullmatch(text)
    if not match:
        raise Fault(FaultCode.INVALID_TYPE, f"{text!r} is not a dateTime (YYYY-MM-DDThh:mm:ss[.f][Z|±hh:mm])")
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    tz = match["tz"]
    offset = UTC
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    try:
        value = datetime(
            int(match["y"]), int(match["mo"]), int(match["d"]),
            int(match["h"]), int(match["mi"]), int(match["s"]), int(frac), tzinfo=offset,
        )  # fmt: skip
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Fault(FaultCode.INVALID_VALUE, f"{text!r} is not a valid date and time: {exc}") from None


def format_datetime(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = f"{value.year:04d}-{value:%m-%dT%H:%M:%S}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"
