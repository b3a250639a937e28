"""USP path names (TR-369 §2.5-2.7) parsed into segments.

Grammar (TR-369 §2.7, plus TR-069 alias-based addressing ``[alias]`` and whitespace
around expression operators, R-ARC.9a)::

    path     ::= name ('.' segment)* ('.' | '()' | '!')?
    segment  ::= name reffollow? | inst
    inst     ::= posnum | '*' | '[' expr ']' | '[' alias ']'
    expr     ::= exprcomp ('&&' exprcomp)*
    exprcomp ::= relpath oper value
    relpath  ::= name (reffollow? '.' name)*
    reffollow::= ('#' (posnum | '*'))? '+'
    oper     ::= '==' | '!=' | '~=' | '<=' | '>=' | '<' | '>'
    value    ::= '"' [^"]* '"' | unquoted text up to '&&' or ']'

Anything else is a :class:`~dsm_tr181.errors.Fault` with ``INVALID_PATH_SYNTAX``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote

from dsm_tr181.errors import Fault, FaultCode

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_POSNUM = re.compile(r"[1-9][0-9]*")
_ALIAS = re.compile(r"[A-Za-z][^\[\]\.\s\"=!<>~&]*")
OPERATORS = ("==", "!=", "~=", "<=", ">=", "<", ">")
MAX_PATH_LENGTH = 4096


class PathKind(enum.Enum):
    OBJECT = "object"  # ends with "."
    PARAMETER = "parameter"
    COMMAND = "command"  # ends with "()"
    EVENT = "event"  # ends with "!"


@dataclass(frozen=True)
class RefFollow:
    """``Param+`` (item 1), ``Param#3+`` (item 3) or ``Param#*+`` (every item, index None)."""

    index: int | None = 1


@dataclass(frozen=True)
class Name:
    name: str
    follow: RefFollow | None = None  # reference following after a parameter name


@dataclass(frozen=True)
class Instance:
    number: int


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class AliasRef:
    alias: str


@dataclass(frozen=True)
class Condition:
    relpath: tuple[Name, ...]
    operator: str
    literal: str  # decoded text of the constant
    quoted: bool

    def describe(self) -> str:
        rel = ".".join(_format_name(n) for n in self.relpath)
        value = '"' + self.literal.replace("%", "%25").replace('"', "%22") + '"' if self.quoted else self.literal
        return f"{rel}{self.operator}{value}"


@dataclass(frozen=True)
class Search:
    conditions: tuple[Condition, ...]


Selector = Instance | Wildcard | AliasRef | Search
Segment = Name | Selector


@dataclass(frozen=True)
class Path:
    segments: tuple[Segment, ...]
    kind: PathKind

    @property
    def is_search(self) -> bool:
        """True when the path may match several instances (wildcards or expressions)."""
        return any(isinstance(s, (Wildcard, Search)) or (isinstance(s, Name) and s.follow) for s in self.segments)

    @property
    def leaf(self) -> str:
        """The parameter, command ("Name()") or event ("Name!") name; "" for objects."""
        if self.kind is PathKind.OBJECT:
            return ""
        last = self.segments[-1]
        assert isinstance(last, Name)
        return last.name + {"command": "()", "event": "!"}.get(self.kind.value, "")

    def object_segments(self) -> tuple[Segment, ...]:
        return self.segments if self.kind is PathKind.OBJECT else self.segments[:-1]

    def __str__(self) -> str:
        text = ".".join(_format_segment(s) for s in self.segments)
        return text + {PathKind.OBJECT: ".", PathKind.COMMAND: "()", PathKind.EVENT: "!"}.get(self.kind, "")


def _format_name(name: Name) -> str:
    if name.follow is None:
        return name.name
    index = name.follow.index
    if index == 1:
        return name.name + "+"
    return f"{name.name}#{'*' if index is None else index}+"


def _format_segment(segment: Segment) -> str:
    if isinstance(segment, Name):
        return _format_name(segment)
    if isinstance(segment, Instance):
        return str(segment.number)
    if isinstance(segment, Wildcard):
        return "*"
    if isinstance(segment, AliasRef):
        return f"[{segment.alias}]"
    return "[" + "&&".join(c.describe() for c in segment.conditions) + "]"


def parse_path(text: str) -> Path:
    """Parse a USP path; every malformed input raises Fault(INVALID_PATH_SYNTAX)."""
    if not isinstance(text, str):
        raise Fault(FaultCode.INVALID_PATH_SYNTAX, f"a path must be a string, not {type(text).__name__}")
    return _Parser(text).parse()


def schema_path(path: str) -> str:
    """The supported-model name of an instance path: "A.3.B.2.C" -> "A.{i}.B.{i}.C"."""
    return ".".join("{i}" if part.isdigit() else part for part in path.split("."))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str) -> Fault:
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        return Fault(FaultCode.INVALID_PATH_SYNTAX, f"{reason} at position {self.pos} of {shown!r}")

    def parse(self) -> Path:
        text = self.text
        if not text:
            raise self.fail("empty path")
        if len(text) > MAX_PATH_LENGTH:
            raise self.fail(f"path longer than {MAX_PATH_LENGTH} characters")
        segments: list[Segment] = [self.name(allow_follow=False)]
        while self.pos < len(text):
            char = text[self.pos]
            if char == "(":
                if text[self.pos :] != "()":
                    raise self.fail("a command path must end with '()'")
                return self.finish(segments, PathKind.COMMAND)
            if char == "!":
                if self.pos != len(text) - 1:
                    raise self.fail("an event path must end with '!'")
                return self.finish(segments, PathKind.EVENT)
            if char != ".":
                raise self.fail(f"unexpected {char!r}")
            self.pos += 1
            if self.pos == len(text):
                return Path(tuple(segments), PathKind.OBJECT)
            segments.append(self.segment())
        return self.finish(segments, PathKind.PARAMETER)

    def finish(self, segments: list[Segment], kind: PathKind) -> Path:
        last = segments[-1]
        if not isinstance(last, Name) or last.follow is not None:
            raise self.fail(f"a {kind.value} path must end with a name")
        if len(segments) < 2:
            raise self.fail(f"a {kind.value} path needs an object")
        return Path(tuple(segments), kind)

    def segment(self) -> Segment:
        text, char = self.text, self.text[self.pos]
        if char == "*":
            self.pos += 1
            return Wildcard()
        if char == "[":
            return self.bracket()
        if char.isdigit():
            match = _POSNUM.match(text, self.pos)
            if not match:
                raise self.fail("instance numbers start at 1")
            self.pos = match.end()
            return Instance(int(match.group()))
        return self.name(allow_follow=True)

    def name(self, allow_follow: bool) -> Name:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a name")
        self.pos = match.end()
        follow = self.reffollow() if allow_follow else None
        return Name(match.group(), follow)

    def reffollow(self) -> RefFollow | None:
        text = self.text
        if text.startswith("+", self.pos):
            self.pos += 1
            return RefFollow(1)
        if not text.startswith("#", self.pos):
            return None
        self.pos += 1
        if text.startswith("*", self.pos):
            self.pos += 1
            index = None
        else:
            match = _POSNUM.match(text, self.pos)
            if not match:
                raise self.fail("expected a list item number or '*' after '#'")
            self.pos = match.end()
            index = int(match.group())
        if not text.startswith("+", self.pos):
            raise self.fail("expected '+' to follow a reference")
        self.pos += 1
        return RefFollow(index)

    def bracket(self) -> Selector:
        text = self.text
        end = self._closing_bracket()
        body = text[self.pos + 1 : end]
        if not body:
            raise self.fail("empty search expression")
        if _ALIAS.fullmatch(body):
            self.pos = end + 1
            return AliasRef(body)
        self.pos += 1
        conditions = [self.condition(end)]
        while self.pos < end:
            if not text.startswith("&&", self.pos):
                raise self.fail("expected '&&' between expression components")
            self.pos += 2
            conditions.append(self.condition(end))
        self.pos = end + 1
        return Search(tuple(conditions))

    def _closing_bracket(self) -> int:
        """Index of the ']' closing the bracket at self.pos (quoted strings skipped)."""
        text, index, quoted = self.text, self.pos + 1, False
        while index < len(text):
            char = text[index]
            if char == '"':
                quoted = not quoted
            elif char == "]" and not quoted:
                return index
            index += 1
        raise self.fail("unterminated '['")

    def condition(self, end: int) -> Condition:
        self._skip_spaces(end)
        relpath = [self.name(allow_follow=True)]
        while self.text.startswith(".", self.pos) and self.pos < end:
            self.pos += 1
            relpath.append(self.name(allow_follow=True))
        if relpath[-1].follow is not None:
            raise self.fail("an expression parameter must end with a parameter name")
        self._skip_spaces(end)
        operator = next((op for op in OPERATORS if self.text.startswith(op, self.pos)), None)
        if operator is None:
            raise self.fail("expected an operator (==, !=, ~=, <, >, <=, >=)")
        self.pos += len(operator)
        self._skip_spaces(end)
        literal, quoted = self.literal(end)
        self._skip_spaces(end)
        return Condition(tuple(relpath), operator, literal, quoted)

    def literal(self, end: int) -> tuple[str, bool]:
        text = self.text
        if text.startswith('"', self.pos):
            close = text.find('"', self.pos + 1)
            if close < 0 or close > end:
                raise self.fail("unterminated string constant")
            raw = text[self.pos + 1 : close]
            self.pos = close + 1
            try:
                return unquote(raw, errors="strict") if "%" in raw else raw, True
            except UnicodeDecodeError:
                raise self.fail("bad percent-escape in string constant") from None
        stop = text.find("&&", self.pos, end)
        stop = end if stop < 0 else stop
        raw = text[self.pos : stop].rstrip()
        if not raw or any(c in raw for c in ' "[]'):
            raise self.fail("expected a constant")
        self.pos += len(raw)
        return raw, False

    def _skip_spaces(self, end: int) -> None:
        while self.pos < end and self.text[self.pos] == " ":
            self.pos += 1
