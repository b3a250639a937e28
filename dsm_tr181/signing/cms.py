"""Detached CMS SignedData (RFC 5652): parse it, then check it against the content's digest.

The content is never needed: with signed attributes (what OpenSSL writes by default) the
signature covers the attributes, whose ``messageDigest`` must equal the content's digest;
without them (``-noattr``) the signature covers the digest itself. So the
archive is hashed once while it streams and the signature is checked against that hash.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from dsm_tr181.errors import Fault, FaultCode

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_PEM_LABELS = (b"CMS", b"PKCS7")


def bad(message: str) -> Fault:
    return Fault(FaultCode.BAD_SIGNATURE, message)


@dataclass(frozen=True)
class DetachedSignature:
    """One parsed signature: what to hash the content with, and who claims to have signed."""

    hash_name: str  # hashlib name of the digest the signature covers: sha256, sha384, sha512
    certificates: tuple[x509.Certificate, ...]  # those it carries (signer, intermediates), maybe none
    _signer_info: asn1_cms.SignerInfo

    def signer_in(self, candidates: list[x509.Certificate]) -> x509.Certificate:
        """The signer's certificate among ``candidates`` (by issuer and serial, or key identifier)."""
        sid = self._signer_info["sid"]
        for cert in candidates:
            if sid.name == "issuer_and_serial_number":
                wanted = sid.chosen
                if cert.serial_number == wanted["serial_number"].native and (
                    cert.issuer.public_bytes() == wanted["issuer"].dump()
                ):
                    return cert
            else:
                try:
                    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
                except x509.ExtensionNotFound:
                    continue
                if ski == sid.chosen.native:
                    return cert
        raise bad("the signer's certificate is neither in the signature nor among the trusted signers")

    def check(self, signer: x509.Certificate, content_digest: bytes) -> None:
        """Raise BAD_SIGNATURE unless ``signer``'s key signed content whose digest is ``content_digest``."""
        info = self._signer_info
        algorithm = HASHES[self.hash_name]()
        signature = info["signature"].native
        attributes = info["signed_attrs"]
        if attributes.native is not None and len(attributes):
            by_type = {attr["type"].native: attr["values"] for attr in attributes}
            if "message_digest" not in by_type or "content_type" not in by_type:
                raise bad("the signed attributes lack messageDigest or contentType")
            if by_type["content_type"][0].native != "data":
                raise bad("the signature is not over plain data")
            if not hmac.compare_digest(by_type["message_digest"][0].native, content_digest):
                raise bad("the signed content does not match the signature (message digest differs)")
            # The signature covers the attributes DER-encoded as a SET OF, not with their [0] tag.
            data = b"\x31" + attributes.dump()[1:]
            _verify(signer.public_key(), info, signature, data, algorithm, prehashed=False)
        else:
            _verify(signer.public_key(), info, signature, content_digest, algorithm, prehashed=True)


def parse(blob: bytes) -> DetachedSignature:
    """Parse a detached SignedData (DER or PEM); BAD_SIGNATURE for anything else."""
    der = _der(blob)
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        info.native  # noqa: B018 - parses every field now, so that later reads cannot fail
        if info["content_type"].native != "signed_data":
            raise bad("not a CMS SignedData")
        signed = info["content"]
        if signed["encap_content_info"]["content"].native is not None:
            raise bad("the signature is not detached (it carries content)")
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise bad(f"expected one signer, found {len(signers)}")
        signer_info = signers[0]
        hash_name = signer_info["digest_algorithm"]["algorithm"].native
        if hash_name not in HASHES:
            raise bad(f"digest algorithm {hash_name!r} is not accepted")
        certificates = []
        for choice in signed["certificates"] or []:
            if choice.name == "certificate":
                certificates.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    except Fault:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, x509.InvalidVersion) as exc:
        raise bad(f"malformed CMS signature ({exc})") from None
    return DetachedSignature(hash_name, tuple(certificates), signer_info)


def _der(blob: bytes) -> bytes:
    if blob[:1] == b"\x30":
        return blob
    text = blob.strip()
    for label in _PEM_LABELS:
        head, tail = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
        if text.startswith(head) and text.endswith(tail):
            try:
                return base64.b64decode(b"".join(text[len(head) : -len(tail)].split()), validate=True)
            except binascii.Error:
                raise bad("PEM signature with invalid base64") from None
    raise bad("not a CMS signature (neither DER nor PEM)")


def _verify(
    key: object,
    info: asn1_cms.SignerInfo,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm,
    *,
    prehashed: bool,
) -> None:
    chosen: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(algorithm) if prehashed else algorithm
    scheme = info["signature_algorithm"]["algorithm"].native
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _rsa_padding(info, scheme), chosen)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(chosen))
        else:
            raise bad(f"signer key type {type(key).__name__} is not accepted")
    except InvalidSignature:
        raise bad("the signature does not verify with the signer's key") from None
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise bad(f"the signature cannot be checked ({exc})") from None


def _rsa_padding(info: asn1_cms.SignerInfo, scheme: str) -> padding.AsymmetricPadding:
    if scheme != "rsassa_pss":
        return padding.PKCS1v15()
    params = info["signature_algorithm"]["parameters"]
    mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
    if mgf_hash not in HASHES:
        raise bad(f"PSS mask hash {mgf_hash!r} is not accepted")
    return padding.PSS(mgf=padding.MGF1(HASHES[mgf_hash]()), salt_length=params["salt_length"].native)
