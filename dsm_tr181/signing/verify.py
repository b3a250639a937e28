"""One signature check, in two steps around the streaming digest of the signed content.

:func:`prepare` parses the signature before the content arrives and says which digest it
needs; :meth:`Pending.verify` takes that digest once the content has streamed through and
checks the signature and the signer's path to the trusted signers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from dsm_tr181.signing import chain, cms


@dataclass(frozen=True)
class Verified:
    signer: str  # Subject of the signing certificate (RFC 4514)
    anchor: bytes  # DER of the trusted certificate the signer chains to


@dataclass(frozen=True)
class Pending:
    signature: cms.DetachedSignature
    anchors: tuple[x509.Certificate, ...]

    @property
    def hash_name(self) -> str:
        """The hashlib name of the digest :meth:`verify` needs."""
        return self.signature.hash_name

    def verify(self, content_digest: bytes, at: datetime | None = None) -> Verified:
        """Check the signature over content with this digest, made by a key trusted at ``at`` (default now)."""
        try:
            signer = self.signature.signer_in([*self.signature.certificates, *self.anchors])
            intermediates = [c for c in self.signature.certificates if c != signer]
            anchor = chain.validate(signer, intermediates, self.anchors, at or datetime.now(UTC))
            self.signature.check(signer, content_digest)
            return Verified(signer.subject.rfc4514_string(), anchor.public_bytes(Encoding.DER))
        except (ValueError, UnsupportedAlgorithm) as exc:  # a carried certificate cryptography cannot read
            raise cms.bad(f"the signature's certificates cannot be read ({exc})") from None


def prepare(signature: bytes, anchors: Sequence[bytes]) -> Pending:
    """Parse ``signature`` (BAD_SIGNATURE if it is none) against trusted certificates given as DER."""
    return Pending(cms.parse(signature), tuple(x509.load_der_x509_certificate(der) for der in anchors))
