"""A real OCI registry on 127.0.0.1 for tests: Debian's ``docker-registry`` (distribution 2.8), fed with ``skopeo``.

Usage::

    with Registry(work) as registry:                          # plain http
        registry.push(layout_dir, "1.0", "app:1.0")           # skopeo copy oci:... docker://...
        url = registry.ref("app:1.0")                         # oci://127.0.0.1:PORT/app:1.0
    Registry(work, tls=tls, auth=("user", "pw"))             # https with the test CA, htpasswd auth

``put_artifact(repo, tag, data, media_type)`` stores an image of one layer through the
registry's HTTP API (signatures under ``sha256-<hex>.sig`` tags), ``manifest_digest(name)``
is the digest the registry serves for ``repo:tag``.
``access_log()`` is the registry's log (one line per request), ``blob_data(hex)`` the
file the registry stores a blob in (tests corrupt it to serve a wrong digest).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.httpserver import TlsFiles, free_port

REGISTRY = shutil.which("docker-registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SKOPEO = shutil.which("skopeo")


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the registry's htpasswd wants bcrypt; glibc's libxcrypt makes it

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: fast tests


class Registry:
    def __init__(self, work: Path, *, tls: TlsFiles | None = None, auth: tuple[str, str] | None = None) -> None:
        self.work = work
        self.tls = tls
        self.auth = auth
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = work / "storage"
        self.log_path = work / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    def ref(self, name: str) -> str:
        return f"oci://{self.host}/{name}"

    def __enter__(self) -> Registry:
        self.work.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log: {level: info, accesslog: {disabled: false}}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}",
            "http:",
            f"  addr: {self.host}",
        ]
        if self.tls:
            lines.append(f"  tls: {{certificate: {self.tls.server_cert}, key: {self.tls.server_key}}}")
        if self.auth:
            htpasswd = self.work / "htpasswd"
            htpasswd.write_text(f"{self.auth[0]}:{_bcrypt(self.auth[1])}\n")
            lines.append(f"auth: {{htpasswd: {{realm: dsm-tests, path: {htpasswd}}}}}")
        config = self.work / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        assert REGISTRY is not None
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)

    def push(self, layout: Path, tag: str, name: str, *, all_platforms: bool = False) -> None:
        """Copy ``layout``'s image ``tag`` to ``name`` (``repo:tag``) in this registry with skopeo."""
        assert SKOPEO is not None
        command = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        if all_platforms:
            command.append("--all")
        if self.auth:
            command += ["--dest-creds", f"{self.auth[0]}:{self.auth[1]}"]
        command += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def access_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def blob_data(self, hexdigest: str) -> Path:
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        assert self.tls is None and self.auth is None, "plain registries only"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            response.read()
            assert response.status < 300, (method, path, response.status, response.reason)
            return response
        finally:
            connection.close()

    def _put_blob(self, repository: str, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = self._request("POST", f"/v2/{repository}/blobs/uploads/").getheader("Location")
        location = location.split("127.0.0.1:" + str(self.port), 1)[-1]
        joiner = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{joiner}digest={digest}", data, {"Content-Type": "application/octet-stream"})
        return {"digest": digest, "size": len(data)}

    def put_artifact(self, repository: str, tag: str, data: bytes, media_type: str) -> None:
        """An OCI image manifest under ``tag`` whose one layer is ``data`` (config: the OCI empty JSON)."""
        config = {"mediaType": "application/vnd.oci.empty.v1+json", **self._put_blob(repository, b"{}")}
        layer = {"mediaType": media_type, **self._put_blob(repository, data)}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
        headers = {"Content-Type": OCI_MANIFEST}
        self._request("PUT", f"/v2/{repository}/manifests/{tag}", json.dumps(manifest).encode(), headers)

    def manifest_digest(self, name: str) -> str:
        """``sha256:<hex>`` of what ``repo:tag`` names, as the registry serves it."""
        repository, _, tag = name.rpartition(":")
        accept = {"Accept": f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"}
        return str(
            self._request("HEAD", f"/v2/{repository}/manifests/{tag}", headers=accept).getheader(
                "Docker-Content-Digest"
            )
        )
