"""Signatures over OCI images: a detached CMS signature over the image's manifest digest.

The signed content is the manifest digest as text, ``sha256:<64 hex>`` in UTF-8 (what
``printf %s sha256:... | openssl cms -sign -binary -outform DER`` signs); the signature is
the same detached CMS as for DU archives (:mod:`dsm_tr181.signing.cms`), checked against
the same trusted signers. A registry-stored signature sits by the common convention under
the tag :func:`signature_tag` of the image's repository
(:mod:`dsm_tr181.packagers.imagesignature` fetches it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime

from dsm_tr181.signing.cms import bad
from dsm_tr181.signing.verify import Pending, Verified, prepare

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def signature_tag(manifest_digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>.sig``, the tag a registry-stored signature has."""
    _check(manifest_digest)
    return manifest_digest.replace(":", "-", 1) + ".sig"


def verify_manifest_signature(
    manifest_digest: str, signature: bytes, signers: Sequence[bytes], at: datetime | None = None
) -> Verified:
    """Check ``signature`` over ``manifest_digest`` against ``signers`` (DER); BAD_SIGNATURE if it fails."""
    _check(manifest_digest)
    return verify_prepared(manifest_digest, prepare(signature, signers), at)


def verify_prepared(manifest_digest: str, pending: Pending, at: datetime | None = None) -> Verified:
    """As :func:`verify_manifest_signature`, for a signature already parsed against its signers."""
    _check(manifest_digest)
    return pending.verify(hashlib.new(pending.hash_name, manifest_digest.encode()).digest(), at)


def _check(manifest_digest: str) -> None:
    if not _DIGEST.fullmatch(manifest_digest):
        raise bad(f"{manifest_digest!r} is not a manifest digest (sha256:<64 lowercase hex>)")
