"""Throwaway code-signing PKI for tests: a root CA, an intermediate, signers, and signatures.

Certificates are made with ``cryptography``; signatures with its PKCS #7 builder (detached,
binary, DER) or with the ``openssl cms`` command, as a vendor's build would::

    pki = Pki.create()                          # root -> intermediate -> signer, EC P-256
    der = pki.sign(data)                        # detached CMS, signer + intermediate carried
    der = pki.openssl_sign(path, tmp_path)      # the same with `openssl cms -sign -binary`
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs7,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
CODE_SIGNING = [ExtendedKeyUsageOID.CODE_SIGNING]


@dataclass(frozen=True)
class Identity:
    cert: x509.Certificate
    key: SigningKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """The certificate and key as PEM files ``name.pem`` and ``name.key``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.pem)
        key.write_bytes(self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return cert, key


def issue(
    name: str,
    issuer: Identity | None = None,
    *,
    ca: bool = False,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 30 * DAY,
    digital_signature: bool = True,
    eku: list[x509.ObjectIdentifier] | None = CODE_SIGNING,
    san: str = "",
    key: SigningKey | None = None,
) -> Identity:
    """A certificate for ``name`` (EC P-256 key unless ``key``) signed by ``issuer`` (self-signed without one)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsm-tr181 tests"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(digital_signature, False, not digital_signature, False, False, False, False, False, False)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    builder = builder.add_extension(usage, critical=True)
    return Identity(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    root: Identity
    intermediate: Identity
    signer: Identity
    extra: dict[str, Identity] = field(default_factory=dict)

    @classmethod
    def create(cls, **signer_options: object) -> Pki:
        root = issue("Test Root CA", ca=True)
        intermediate = issue("Test Signing CA", root, ca=True)
        return cls(root, intermediate, issue("Test Vendor Signer", intermediate, **signer_options))  # type: ignore[arg-type]

    def sign(
        self,
        data: bytes,
        signer: Identity | None = None,
        chain: tuple[Identity, ...] | None = None,
        algorithm: hashes.HashAlgorithm | None = None,
    ) -> bytes:
        """A detached CMS signature of ``data`` (DER) carrying the signer and ``chain`` (default: the intermediate)."""
        signer = signer or self.signer
        builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
        builder = builder.add_signer(signer.cert, signer.key, algorithm or hashes.SHA256())
        for extra in (self.intermediate,) if chain is None else chain:
            builder = builder.add_certificate(extra.cert)
        return builder.sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])

    def openssl_sign(self, content: Path, workdir: Path, *options: str, signer: Identity | None = None) -> bytes:
        """``openssl cms -sign -binary -outform DER`` of ``content`` by the signer, intermediate carried."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise FileNotFoundError("openssl")
        cert, key = (signer or self.signer).write(workdir, "signer")
        chain, _ = self.intermediate.write(workdir, "chain")
        out = workdir / (content.name + ".p7s")
        command = [openssl, "cms", "-sign", "-binary", "-outform", "DER", "-in", str(content), "-signer", str(cert)]
        command += ["-inkey", str(key), "-certfile", str(chain), "-out", str(out), *options]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        return out.read_bytes()
