"""The ``Signature`` input of InstallDU()/Update(): get the signature's bytes, parse them.

Forms accepted:

* ``data:`` URI (RFC 2397), base64 (``;base64``) or percent-encoded. Its length is bounded
  by the model itself (the URL data type: 2048 characters), which refuses a longer one
  before any work starts; a CMS signature carrying an EC P-256 signer certificate fits.
* ``https://`` / ``http://`` URL, fetched with the archive's TLS options (CA file,
  verification, timeouts, redirects: https never downgraded to http). The DU's Username and
  Password are sent only when the signature is on the archive's own origin (scheme, host and
  port); TR-181 2.19 has no signature credentials of its own.
* an absolute path or ``file:`` URL, as for the archive.

A URL with a userinfo part is refused like the archive's. At most ``max_signature_bytes``
are read. The format is deduced from the content (see :mod:`dsm_tr181.signing`); the
Content-Type of an http reply is not relied on.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.lcm.urls import display_url
from dsm_tr181.packagers.fetch import FetchOptions, local_path, open_local
from dsm_tr181.packagers.httpget import BasicAuth, open_url, split_url, status_fault

if TYPE_CHECKING:
    from dsm_tr181.signing.verify import Pending

log = logging.getLogger(__name__)


def bad(message: str) -> Fault:
    return Fault(FaultCode.BAD_SIGNATURE, message)


def load(source: PackageSource, options: FetchOptions) -> Pending | None:
    """The parsed signature of ``source`` ready to verify, None when it names none."""
    if not source.signature:
        return None
    blob = read(source, options)
    # cryptography and asn1crypto (~15 MiB of RSS) load with the first signed install.
    from dsm_tr181.signing.verify import prepare

    return prepare(blob, source.signers)


def read(source: PackageSource, options: FetchOptions) -> bytes:
    """The raw bytes ``source.signature`` names."""
    url = source.signature
    if url[:5].lower() == "data:":
        return _data_uri(url, options.max_signature_bytes)
    label = "signature " + display_url(url)
    local = local_path(url, label)
    if local is not None:
        with open_local(local, label) as file:
            return _bounded(file.read(options.max_signature_bytes + 1), options.max_signature_bytes, label)
    same_origin = _origin(url) == _origin(source.url) if source.url[:4].lower() == "http" else False
    auth = BasicAuth(source.username, source.password) if same_origin and (source.username or source.password) else None
    split_url(url)
    with open_url(url, auth, options.http) as reply:
        response = reply.response
        if response.status != 200:
            raise status_fault(response.status, response.reason, reply.url)
        try:
            data = response.read(options.max_signature_bytes + 1)
        except TimeoutError:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{label}: stalled") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{label}: {exc!r}") from None
        if len(data) <= options.max_signature_bytes and response.length:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{label}: connection closed early")
        log.info("%s: %d bytes (%s)", label, len(data), response.getheader("Content-Type", "no Content-Type"))
    return _bounded(data, options.max_signature_bytes, label)


def _data_uri(url: str, limit: int) -> bytes:
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise bad("malformed data: URI (no comma)")
    raw = unquote_to_bytes(payload)
    if header.lower().endswith(";base64"):
        try:
            raw = base64.b64decode(b"".join(raw.split()), validate=True)
        except binascii.Error:
            raise bad("data: URI with invalid base64") from None
    return _bounded(raw, limit, "signature data: URI")


def _bounded(data: bytes, limit: int, label: str) -> bytes:
    if len(data) > limit:
        raise bad(f"{label}: larger than {limit} bytes")
    if not data:
        raise bad(f"{label}: empty")
    return data


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default
