"""X.509 path validation of a signer certificate up to an ExecEnv's trusted signers.

``cryptography``'s verifier (RFC 5280 path building, webpki CA rules) with a code-signing
end-entity policy: the signer's keyUsage must be present with digitalSignature, and an
extendedKeyUsage, when present, must list codeSigning (or anyExtendedKeyUsage). Every
certificate of the path must be valid at the time given (the time of the install). A
trusted signer certificate may be a CA (root or intermediate) or the signer's own
certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from dsm_tr181.signing.cms import bad

_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


def _key_usage(_policy: object, _cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("the signer's keyUsage lacks digitalSignature")


def _extended_key_usage(_policy: object, _cert: x509.Certificate, usage: x509.ExtendedKeyUsage | None) -> None:
    if usage is not None and ExtendedKeyUsageOID.CODE_SIGNING not in usage and _ANY_EKU not in usage:
        raise ValueError("the signer's extendedKeyUsage lacks codeSigning")


_SIGNER_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _key_usage)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _extended_key_usage)
)


def validate(
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: datetime,
) -> x509.Certificate:
    """The trusted certificate ``signer`` chains to at time ``at``; BAD_SIGNATURE if none."""
    if not anchors:
        raise bad("the execution environment has no trusted signers (Signers is empty)")
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(at)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_SIGNER_POLICY)
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(signer, list(intermediates)).chain
    except VerificationError as exc:
        raise bad(f"the signer {signer.subject.rfc4514_string()!r} is not trusted: {exc}") from None
    return chain[-1]
