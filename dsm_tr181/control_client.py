"""Client side of the local control socket, and the framing both ends share.

The protocol is the original RDK DSM's: on a UNIX stream socket, each message is a
4-byte host-order ``int`` length followed by that many bytes of UTF-8 JSON. A client
sends one request ``{"method", "id", "params"}`` per connection and reads
``{"id", "result"}`` or ``{"id", "error", "fault"}``. Requests with ``"wait": true``
and ``events`` keep the connection open: the server sends ``{"id", "progress"}`` or
``{"event"}`` messages before (or instead of) the final reply.

Kept free of the data-model imports so that ``dsmcli`` starts fast.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping

TYPE_CHECKING = False  # typing itself is not imported: dsmcli's start-up (see cli.py)
if TYPE_CHECKING:
    from typing import Any

    Message = dict[str, Any]
else:
    Message = dict

HEADER = struct.Struct("=i")  # the C++ DSM sends a native int
DEFAULT_SOCKET = "/run/dsm/dsm.sock"
MAX_REPLY = 64 << 20


def default_socket_path() -> str:
    return os.environ.get("DSM_SOCKET") or DEFAULT_SOCKET


def encode_frame(message: Any) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode()
    return HEADER.pack(len(body)) + body


class RawJson:
    """A result already serialised as UTF-8 JSON, in pieces: a reply carries it as it is."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def decode(self) -> Any:
        return json.loads(b"".join(self.pieces))


def reply_frame(request_id: Any, result: Any) -> list[bytes]:
    """The frame of the reply ``{"id", "result"}``, in pieces to send in turn (taken from
    a :class:`RawJson` result, which is left empty)."""
    if not isinstance(result, RawJson):
        return [encode_frame({"id": request_id, "result": result})]
    pieces, result.pieces = result.pieces, []
    head = b'{"id": ' + json.dumps(request_id).encode() + b', "result": '
    size = len(head) + sum(map(len, pieces)) + 1
    return [HEADER.pack(size) + head, *pieces, b"}"]


class ClientError(Exception):
    pass


class Unreachable(ClientError):
    """Nothing answers at the socket path."""


class ProtocolError(ClientError):
    """The daemon's answer could not be read."""


class DaemonError(ClientError):
    """The daemon refused or failed the request."""

    def __init__(self, message: str, fault: Mapping[str, Any] | None = None, reply: Message | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fault = dict(fault or {})
        self.reply = reply or {}

    def describe(self) -> str:
        """The fault on one line: ``error 7223 Unknown Execution Environment at <path>: <message>``."""
        fault = self.fault
        if "code" not in fault:
            return f"error: {self.message}"
        where = f" at {fault['path']}" if fault.get("path") else ""
        return f"error {fault['code']} {fault.get('name', '')}{where}: {fault.get('message', self.message)}"


class ControlClient:
    def __init__(self, path: str, timeout: float | None = 60.0) -> None:
        self.path = path
        self.timeout = timeout  # for one-reply calls; streams wait as long as the daemon works
        self._ids = itertools.count(1)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (raise :class:`DaemonError`)."""
        with self._connect(self.timeout) as sock:
            request_id = self._send(sock, method, params)
            reply = _read_message(sock)
        if reply is None:
            raise ProtocolError(f"the daemon at {self.path} closed the connection without a reply")
        return _result(reply, request_id)

    def follow(self, method: str, params: Mapping[str, Any] | None, on_progress: Callable[[Message], None]) -> Any:
        """Send a request with ``wait``, pass progress messages on, return the final result."""
        with self._connect(None) as sock:
            request_id = self._send(sock, method, {**(params or {}), "wait": True})
            while (message := _read_message(sock)) is not None:
                if "progress" in message:
                    on_progress(message["progress"])
                else:
                    return _result(message, request_id)
        raise ProtocolError(f"the daemon at {self.path} closed the connection before the request ended")

    def events(self, prefix: str = "", on_subscribed: Callable[[], None] | None = None) -> Iterator[Message]:
        """Notifications under ``prefix`` until the daemon closes the connection."""
        with self._connect(None) as sock:
            request_id = self._send(sock, "events", {"prefix": prefix})
            while (message := _read_message(sock)) is not None:
                if "event" in message:
                    yield message["event"]
                else:
                    _result(message, request_id)  # the acknowledgement, or an error that ends the stream
                    if on_subscribed:
                        on_subscribed()

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            raise Unreachable(f"cannot reach the dsm daemon at {self.path}: {reason}") from None
        sock.settimeout(timeout)
        return sock

    def _send(self, sock: socket.socket, method: str, params: Mapping[str, Any] | None) -> int:
        request_id = next(self._ids)
        try:
            sock.sendall(encode_frame({"method": method, "id": request_id, "params": dict(params or {})}))
        except OSError as exc:
            raise ProtocolError(f"sending to the daemon at {self.path} failed: {exc}") from None
        return request_id


def read_frame(sock: socket.socket, limit: int = MAX_REPLY) -> bytes | None:
    """One frame's body; None when the peer closed before a new frame began."""
    header = _read_exactly(sock, HEADER.size, allow_eof=True)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if not 0 <= length <= limit:
        raise ProtocolError(f"bad frame length {length}")
    body = _read_exactly(sock, length, allow_eof=False)
    assert body is not None
    return body


def _read_message(sock: socket.socket) -> Message | None:
    try:
        body = read_frame(sock)
    except TimeoutError:
        raise ProtocolError("the daemon did not answer in time") from None
    except OSError as exc:
        raise ProtocolError(f"reading from the daemon failed: {exc}") from None
    if body is None:
        return None
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"the daemon sent malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("the daemon sent a message that is not a JSON object")
    return message


def _read_exactly(sock: socket.socket, size: int, allow_eof: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            if allow_eof and not chunks:
                return None
            raise ProtocolError(f"the connection closed inside a frame ({len(chunks)} of {size} bytes)")
        chunks += chunk
    return bytes(chunks)


def _result(reply: Message, request_id: int) -> Any:
    if "error" in reply:
        raise DaemonError(str(reply["error"]), reply.get("fault"), reply)
    if "result" not in reply:
        raise ProtocolError(f"reply to request {request_id} has neither result nor error")
    return reply["result"]
