"""A client for the OCI distribution API (pull only): manifests and blobs, with Basic or Bearer auth.

The first request goes out without credentials; a 401 names the scheme in its
``WWW-Authenticate`` challenge. ``Basic`` → the InstallDU Username/Password are sent
to the registry's origin. ``Bearer realm=…,service=…,scope=…`` → a token is asked
from the realm (with those credentials as Basic auth, if any) and sent as
``Authorization: Bearer`` to the registry's origin only (a blob redirect to a
storage host never gets it). A registry listed in ``plain_http`` is spoken to over
http; every other over https, verified as :mod:`~dsm_tr181.packagers.httpget` does.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.httpget import BasicAuth, Credentials, HttpOptions, Reply, open_url, status_fault
from dsm_tr181.packagers.imagemanifest import ACCEPT, MAX_MANIFEST_BYTES
from dsm_tr181.packagers.imageref import ImageRef
from dsm_tr181.packagers.worker import Cancel

log = logging.getLogger(__name__)

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True)
class BearerToken:
    token: str = field(repr=False)

    def header(self) -> str:
        return f"Bearer {self.token}"


class Registry:
    """One repository of one registry, for the length of one pull."""

    def __init__(
        self, ref: ImageRef, username: str, password: str, options: HttpOptions, plain_http: bool, cancel: Cancel
    ) -> None:
        self.ref = ref
        self._basic = BasicAuth(username, password) if username or password else None
        self._auth: Credentials | None = None
        self._options = options
        self._cancel = cancel
        self._base = f"{'http' if plain_http else 'https'}://{ref.host}/v2/{ref.repository}/"

    def manifest(self, reference: str) -> tuple[bytes, str]:
        """The manifest or index ``reference`` names (bytes as served, Content-Type)."""
        found = self.manifest_if_any(reference, missing_ok=False)
        assert found is not None
        return found

    def manifest_if_any(self, reference: str, *, missing_ok: bool = True) -> tuple[bytes, str] | None:
        """As :meth:`manifest`; None when the registry answers 404 and ``missing_ok``."""
        with self.open(f"manifests/{reference}", {"Accept": ACCEPT}, missing_ok=missing_ok) as reply:
            if reply is None:
                return None
            announced = (reply.response.getheader("Content-Type") or "").split(";")[0].strip()
            length = reply.response.length
            if length is not None and length > MAX_MANIFEST_BYTES:
                raise Fault(FaultCode.CORRUPT_DATA, f"{self.ref}: manifest of {length} bytes is too large")
            try:
                data = reply.response.read(MAX_MANIFEST_BYTES + 1)
            except TimeoutError:
                raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{self.ref}: manifest download stalled") from None
            except (OSError, http.client.HTTPException) as exc:
                raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{self.ref}: manifest download failed ({exc!r})") from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.ref}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        return data, announced

    @contextmanager
    def blob(self, digest: str) -> Iterator[Reply]:
        with self.open(f"blobs/{digest}", {}) as reply:
            assert reply is not None
            yield reply

    @contextmanager
    def open(self, path: str, headers: dict[str, str], *, missing_ok: bool = False) -> Iterator[Reply | None]:
        """GET ``path`` of the repository with 200 expected, authenticating once when challenged;
        None for a 404 when ``missing_ok``."""
        url = self._base + path
        for attempt in (1, 2):
            self._cancel.check(str(self.ref))
            with open_url(url, self._auth, self._options, headers) as reply, self._cancel.hook(reply.abort):
                status = reply.response.status
                if status == 401 and attempt == 1:
                    challenge = reply.response.getheader("WWW-Authenticate") or ""
                elif status == 404 and missing_ok:
                    yield None
                    return
                else:
                    if status != 200:
                        raise status_fault(status, reply.response.reason, reply.url)
                    yield reply
                    return
            self._authenticate(challenge)
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.strip().partition(" ")
        where = f"{self.ref}: the registry asks for {scheme or 'credentials'}"
        if scheme.lower() == "basic":
            if self._basic is None:
                raise Fault(FaultCode.TRANSFER_AUTH_FAILURE, f"{where}, and no Username/Password was given")
            self._auth = self._basic
        elif scheme.lower() == "bearer":
            self._auth = self._token(dict(_CHALLENGE_PARAM.findall(params)), where)
        else:
            raise Fault(FaultCode.TRANSFER_AUTH_FAILURE, f"{where}: unsupported authentication scheme")

    def _token(self, params: dict[str, str], where: str) -> BearerToken:
        realm = params.get("realm", "")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise Fault(FaultCode.TRANSFER_AUTH_FAILURE, f"{where}: the token realm {realm!r} is not an http(s) URL")
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        with open_url(url, self._basic, self._options) as reply:
            if reply.response.status != 200:
                raise status_fault(reply.response.status, reply.response.reason, reply.url)
            data = reply.response.read(_MAX_TOKEN_BYTES + 1)
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or len(data) > _MAX_TOKEN_BYTES:
            raise Fault(FaultCode.TRANSFER_AUTH_FAILURE, f"{where}: the token server gave no usable token")
        log.info("%s: got a bearer token", self.ref)
        return BearerToken(token)
