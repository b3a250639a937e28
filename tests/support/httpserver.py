"""A real HTTP/HTTPS file server on 127.0.0.1 for tests.

Usage::

    with FileServer(directory) as server:               # plain http
        url = server.url("hello.tar")                   # http://127.0.0.1:PORT/hello.tar
    tls = make_tls_files(tmp_dir)                       # once per session: openssl CLI
    with FileServer(directory, tls=tls) as server:      # https; trust tls.ca_cert
        ...

Behaviour is set on the running server through plain attributes, read at each request:

- ``auth = ("user", "password")``: every file needs that Basic auth (401 otherwise);
- ``redirects = {"/a.tar": "/b.tar"}``: answer 302 with that Location (a path, or a
  full URL such as ``server.url("b.tar", host="localhost")`` for another host);
- ``statuses = {"/x.tar": 500}``: answer that status with an empty body;
- ``truncate_after = N``: announce the full Content-Length, send N bytes, close;
- ``chunk_delay = seconds``: sleep before each 64 KiB chunk of a body (slow server);
- ``stall_after = N``: send N bytes of a body, then nothing until the server stops.

``requests`` lists what was asked (:class:`Request`), for assertions. The server is
threaded, listens on an ephemeral port and stops with the ``with`` block.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path  # the CA clients must trust
    server_cert: Path  # for 127.0.0.1 and localhost, signed by the CA
    server_key: Path


@dataclass(frozen=True)
class Request:
    path: str
    host: str  # the Host header
    authorization: str  # the Authorization header, "" if none
    query: str = ""  # the query string asked for, "" if none


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a throwaway CA and a server certificate for 127.0.0.1/localhost with ``openssl``.

    Raises FileNotFoundError when the openssl binary is missing (callers skip).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key = directory / "ca.key"
    csr = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "authorityKeyIdentifier = keyid\n"
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3"]
    ca_usage = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    ca_subject = ["-subj", "/CN=dsm-tr181 test CA"]
    signing = ["-CA", files.ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-extfile", extensions, "-days", "3"]
    commands = [
        [openssl, "req", "-x509", *new_key, *ca_usage, *ca_subject, "-keyout", ca_key, "-out", files.ca_cert],
        [openssl, "req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", files.server_key, "-out", csr],
        [openssl, "x509", "-req", "-in", csr, *signing, "-out", files.server_cert],
    ]
    for command in commands:
        subprocess.run([str(arg) for arg in command], check=True, capture_output=True, timeout=30)
    return files


class FileServer:
    """Serves the files below ``root`` over http, or https when ``tls`` is given."""

    def __init__(self, root: Path, *, tls: TlsFiles | None = None) -> None:
        self.root = root
        self.auth: tuple[str, str] | None = None
        self.redirects: dict[str, str] = {}
        self.statuses: dict[str, int] = {}
        self.truncate_after: int | None = None
        self.chunk_delay = 0.0
        self.stall_after: int | None = None
        self.requests: list[Request] = []
        self._stopping = threading.Event()
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(tls.server_cert, tls.server_key)
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="test-file-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._context is not None else "http"

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (for connection-refused tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FileServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        context = self.owner._context
        if context is not None:
            request.settimeout(10)
            try:
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate: that is what some tests want
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up early (truncation, timeouts) are expected; keep stderr quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log."""

    def do_GET(self) -> None:
        owner = self.server.owner
        path, query = urlsplit(self.path)[2:4]
        owner.requests.append(Request(path, self.headers.get("Host", ""), self.headers.get("Authorization", ""), query))
        if path in owner.statuses:
            self._empty(owner.statuses[path])
        elif path in owner.redirects:
            self._empty(302, {"Location": owner.redirects[path]})
        elif owner.auth is not None and not self._authorized(owner.auth):
            self._empty(401, {"WWW-Authenticate": 'Basic realm="test"'})
        else:
            self._send_file(owner, path)

    def _authorized(self, auth: tuple[str, str]) -> bool:
        expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        return self.headers.get("Authorization") == expected

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, owner: FileServer, path: str) -> None:
        file = (owner.root / unquote(path).lstrip("/")).resolve()
        if not file.is_relative_to(owner.root.resolve()) or not file.is_file():
            self._empty(404)
            return
        size = file.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        budget = size if owner.truncate_after is None else min(size, owner.truncate_after)
        if owner.stall_after is not None:
            budget = min(budget, owner.stall_after)
        with file.open("rb") as body:
            while budget > 0:
                if owner.chunk_delay and owner._stopping.wait(owner.chunk_delay):
                    return
                chunk = body.read(min(_CHUNK, budget))
                if not chunk:
                    return
                self.wfile.write(chunk)
                budget -= len(chunk)
        self.wfile.flush()
        if owner.stall_after is not None:
            owner._stopping.wait()
        self.close_connection = True
