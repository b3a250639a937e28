"""HTTP(S) GET with the packager's rules, on the standard library's http.client.

- TLS is verified against the system store, or only against ``ca_file`` when one is
  configured; ``verify_tls=False`` turns verification off (and says so in the log).
- Redirects (301, 302, 303, 307, 308) are followed up to ``max_redirects``; a loop,
  a redirect to a URL with credentials, to another scheme than http(s), or from
  https down to http is refused.
- Basic credentials are sent to the origin (scheme, host, port) of the URL asked
  for and never to another origin a redirect leads to.
- ``connect_timeout`` bounds the TCP connect and TLS handshake, ``read_timeout``
  each later wait for data; :attr:`Reply.abort` ends such a wait from another thread.

Faults: DNS failure, refused or timed-out connection and no response at all are
SERVER_UNREACHABLE; a TLS failure is SERVER_INSECURE; statuses map in
:func:`status_fault`. Messages name the URL as :func:`display_url` shows it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.urls import display_url

log = logging.getLogger(__name__)

USER_AGENT = "dsm-tr181"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HttpOptions:
    ca_file: Path | None
    verify_tls: bool
    connect_timeout: float
    read_timeout: float
    max_redirects: int


class Credentials(Protocol):
    """Whatever makes an Authorization header (Basic here, a registry's Bearer token)."""

    def header(self) -> str: ...


@dataclass(frozen=True)
class BasicAuth:
    """Credentials for one origin; never shown by repr."""

    username: str = field(repr=False)
    password: str = field(repr=False)

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


class Reply(NamedTuple):
    url: str  # the URL that answered, after redirects
    response: http.client.HTTPResponse
    # From any thread, until open_url() exits: shut the connection down, so that a read
    # blocked on it returns at once.
    abort: Callable[[], None]


def status_fault(status: int, reason: str, url: str) -> Fault:
    """The fault for a final HTTP status other than 200."""
    where = f"{display_url(url)}: HTTP {status} {reason}".rstrip()
    if status in (401, 403, 407):
        return Fault(FaultCode.TRANSFER_AUTH_FAILURE, f"{where}: the server refused the credentials")
    return Fault(FaultCode.FILE_ACCESS_FAILURE, where)


@contextmanager
def open_url(
    url: str, auth: Credentials | None, options: HttpOptions, headers: Mapping[str, str] | None = None
) -> Iterator[Reply]:
    """GET ``url``, following redirects; yield the final reply whatever its status.

    ``headers`` are sent with every request (e.g. ``Accept``)."""
    connection, handle, reply = _follow(url, auth, options, headers or {})
    try:
        yield reply
    finally:
        handle.close()
        connection.close()


def _follow(
    url: str, auth: Credentials | None, options: HttpOptions, headers: Mapping[str, str]
) -> tuple[http.client.HTTPConnection, socket.socket, Reply]:
    origin = _origin(split_url(url))
    context: ssl.SSLContext | None = None
    visited: list[str] = []
    current = url
    while True:
        parts = split_url(current)
        if parts.scheme == "https" and context is None:
            context = _tls_context(options)
        with contextlib.ExitStack() as unless_kept:  # closes what a redirect or an error leaves behind
            connection = _connect(parts, options, context, current)
            unless_kept.callback(connection.close)
            # A descriptor of our own for Reply.abort: http.client closes the connection's
            # socket when it likes, and a closed descriptor's number may be reused.
            handle = _own_handle(connection, current)
            unless_kept.callback(handle.close)
            response = _request(connection, parts, auth if _origin(parts) == origin else None, current, headers)
            location = response.getheader("Location") if response.status in _REDIRECTS else None
            if location is None:
                unless_kept.pop_all()
                return connection, handle, Reply(current, response, functools.partial(_shut_down, handle))
        visited.append(current)
        current = _redirect_target(current, location, visited, options.max_redirects)
        log.debug("%s redirects to %s", display_url(visited[-1]), display_url(current))


def _own_handle(connection: http.client.HTTPConnection, url: str) -> socket.socket:
    sock = connection.sock
    assert sock is not None  # connected
    try:
        return socket.fromfd(sock.fileno(), sock.family, sock.type)
    except OSError as exc:
        raise Fault(FaultCode.INTERNAL_ERROR, f"{display_url(url)}: {exc.strerror or exc}") from None


def _shut_down(handle: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the peer may have closed it already
        handle.shutdown(socket.SHUT_RDWR)


def _redirect_target(current: str, location: str, visited: list[str], limit: int) -> str:
    where = f"{display_url(visited[0])}: redirect to {display_url(location)}"
    try:
        target = urljoin(current, location.strip())
        parts = split_url(target)
    except ValueError:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{where}: malformed Location") from None
    except Fault as fault:
        unsupported = fault.code is FaultCode.UNSUPPORTED_PROTOCOL
        code = FaultCode.UNSUPPORTED_PROTOCOL if unsupported else FaultCode.FILE_ACCESS_FAILURE
        raise Fault(code, f"{where}: refused ({fault.message})") from None
    if urlsplit(current).scheme == "https" and parts.scheme == "http":
        raise Fault(FaultCode.SERVER_INSECURE, f"{where}: refused, it leaves https for http")
    if parts.username is not None or parts.password is not None:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{where}: refused, the URL carries credentials")
    if target in visited:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{where}: redirect loop")
    if len(visited) > limit:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{where}: more than {limit} redirects")
    return target


def split_url(url: str) -> SplitResult:
    """Parse and check an http(s) URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{display_url(url)}: malformed URL ({exc})") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise Fault(FaultCode.UNSUPPORTED_PROTOCOL, f"{display_url(url)}: scheme {parts.scheme!r} is not supported")
    if not parts.hostname:
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{display_url(url)}: the URL names no host")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{display_url(url)}: the URL holds spaces or control characters")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[parts.scheme]


def _tls_context(options: HttpOptions) -> ssl.SSLContext:
    if not options.verify_tls:
        log.warning("TLS certificate verification is turned off (verify_tls = false)")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    except OSError as exc:
        raise Fault(FaultCode.INTERNAL_ERROR, f"CA file {options.ca_file}: cannot be loaded ({exc})") from exc


def _connect(
    parts: SplitResult, options: HttpOptions, context: ssl.SSLContext | None, url: str
) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=options.connect_timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=options.connect_timeout)
    where = display_url(url)
    try:
        connection.connect()
    except ssl.SSLCertVerificationError as exc:
        raise Fault(FaultCode.SERVER_INSECURE, f"{where}: certificate not trusted ({exc.verify_message})") from None
    except ssl.SSLError as exc:
        raise Fault(FaultCode.SERVER_INSECURE, f"{where}: TLS handshake failed ({exc.reason or exc})") from None
    except socket.gaierror as exc:
        raise Fault(FaultCode.SERVER_UNREACHABLE, f"{where}: cannot resolve {host!r} ({exc.strerror})") from None
    except TimeoutError:
        raise Fault(
            FaultCode.SERVER_UNREACHABLE, f"{where}: no connection within {options.connect_timeout:g} s"
        ) from None
    except OSError as exc:
        raise Fault(FaultCode.SERVER_UNREACHABLE, f"{where}: cannot connect ({exc.strerror or exc})") from None
    assert connection.sock is not None
    connection.sock.settimeout(options.read_timeout)
    return connection


def _request(
    connection: http.client.HTTPConnection,
    parts: SplitResult,
    auth: Credentials | None,
    url: str,
    extra: Mapping[str, str],
) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **extra}
    if auth is not None:
        headers["Authorization"] = auth.header()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    where = display_url(url)
    try:
        connection.request("GET", target, headers=headers)
        return connection.getresponse()
    except TimeoutError:
        raise Fault(FaultCode.SERVER_UNREACHABLE, f"{where}: no response within the read timeout") from None
    except (http.client.RemoteDisconnected, OSError) as exc:
        raise Fault(FaultCode.SERVER_UNREACHABLE, f"{where}: connection lost before a response ({exc})") from None
    except http.client.HTTPException as exc:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{where}: invalid HTTP response ({exc!r})") from None
