"""A small blocking HTTP(S) client for the repository's API (the CLI's and the device's;
the daemon calls it from a worker thread). Standard library only, so the daemon needs no
HTTP framework."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class FleetApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FleetClient:
    def __init__(self, url: str, token: str, ca_file: str = "", timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the repository URL must be http(s)://host[:port], not {url!r}")
        self._parts, self._host, self._token, self._timeout = parts, parts.hostname, token, timeout
        self._context = ssl.create_default_context(cafile=ca_file or None) if parts.scheme == "https" else None

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> Reply:  # fmt: skip
        """One request; an HTTP error status (>= 400) raises FleetApiError with the server's message."""
        sent = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        elif raw is not None:
            sent.setdefault("Content-Type", "application/octet-stream")
        port = self._parts.port
        if self._context is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, port, timeout=self._timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self._host, port, timeout=self._timeout)
        try:
            connection.request(method, self._parts.path.rstrip("/") + path, body=data, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise FleetApiError(0, f"{self._parts.geturl()}: {exc}") from None
        finally:
            connection.close()
        if reply.status >= 400:
            try:
                message = str(reply.json().get("error", ""))
            except (ValueError, AttributeError):
                message = reply.body[:200].decode(errors="replace")
            raise FleetApiError(reply.status, message)
        return reply
