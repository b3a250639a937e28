"""Registry token auth (``WWW-Authenticate: Bearer``): the image packager against a token-protected
registry on 127.0.0.1 (a small real HTTP server here: Debian's docker-registry needs a token
service with signing keys for this, which is beyond a test)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dsm_tr181.bundlegen.ocilayout import Layout, file
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig

pytestmark = pytest.mark.integration

USER, PASSWORD, TOKEN = "puller", "Pw-bearer-7", "tok-9f8e7d"


class TokenRegistry(ThreadingHTTPServer):
    def __init__(self, layout: Layout) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.layout = layout
        self.seen: list[tuple[str, str]] = []  # (path, Authorization)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: TokenRegistry

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        authorization = self.headers.get("Authorization", "")
        self.server.seen.append((url.path, authorization))
        if url.path == "/token":
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            query = parse_qs(url.query)
            if authorization != basic or query.get("scope") != ["repository:app:pull"]:
                self._send(401, b"")
            else:
                self._send(200, json.dumps({"token": TOKEN}).encode())
            return
        if authorization != f"Bearer {TOKEN}":
            realm = f'Bearer realm="http://{self.server.host}/token",service="test",scope="repository:app:pull"'
            self._send(401, b"", {"WWW-Authenticate": realm})
            return
        blobs = self.server.layout.root / "blobs" / "sha256"
        if url.path == "/v2/app/manifests/1.0":
            digest = json.loads((self.server.layout.root / "index.json").read_text())["manifests"][0]["digest"]
            self._send(200, (blobs / digest.removeprefix("sha256:")).read_bytes())
        elif url.path.startswith("/v2/app/blobs/sha256:"):
            self._send(200, (blobs / url.path.rpartition(":")[2]).read_bytes())
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[TokenRegistry]:
    layout = Layout(tmp_path / "img")
    layout.tag(layout.image([[file("hello.txt", "hi")]], {"Cmd": ["/hello"]}), "1.0")
    server = TokenRegistry(layout)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def pull(registry: TokenRegistry, tmp_path: Path, password: str) -> BundleInfo:
    (tmp_path / "bundles").mkdir(exist_ok=True)
    packager = ImagePackager(ImagePackagerConfig(plain_http=(registry.host,)), tmp_path / "layers")
    source = PackageSource(f"oci://{registry.host}/app:1.0", USER, password)
    return asyncio.run(packager.unpack(source, tmp_path / "bundles" / "g", lambda *_: None))


def test_bearer_token_is_fetched_with_the_credentials_and_sent_to_the_registry(
    registry: TokenRegistry, tmp_path: Path
) -> None:
    info = pull(registry, tmp_path, PASSWORD)

    assert (info.path / "rootfs" / "hello.txt").read_text() == "hi"
    assert info.version == "1.0" and info.name == "app"
    token_requests = [auth for path, auth in registry.seen if path == "/token"]
    assert len(token_requests) == 1 and token_requests[0].startswith("Basic ")
    registry_requests = [auth for path, auth in registry.seen if path.startswith("/v2/")]
    assert registry_requests[0] == ""  # first without credentials, then the token only
    assert set(registry_requests[1:]) == {f"Bearer {TOKEN}"}


def test_refused_token_request_is_an_authentication_failure(registry: TokenRegistry, tmp_path: Path) -> None:
    with pytest.raises(Fault) as raised:
        pull(registry, tmp_path, "wrong")
    assert raised.value.code is FaultCode.TRANSFER_AUTH_FAILURE
    assert list((tmp_path / "bundles").iterdir()) == [] and list((tmp_path / "layers" / "layers").iterdir()) == []
