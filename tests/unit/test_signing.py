"""Detached CMS signatures checked against trusted signers, with real keys and certificates."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.signing import images, truststore
from dsm_tr181.signing.verify import prepare
from tests.support.pki import DAY, NOW, Pki, issue

pytestmark = pytest.mark.unit

DATA = b"a DU archive\x00" * 1000


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


def verify(signature: bytes, data: bytes, anchors: list[bytes]) -> str:
    pending = prepare(signature, anchors)
    return pending.verify(hashlib.new(pending.hash_name, data).digest()).signer


def refused(signature: bytes, data: bytes, anchors: list[bytes]) -> str:
    with pytest.raises(Fault) as caught:
        verify(signature, data, anchors)
    assert caught.value.code is FaultCode.BAD_SIGNATURE
    return caught.value.message


@pytest.mark.parametrize("anchor", ["root", "intermediate", "signer"])
def test_a_good_signature_chains_to_any_trusted_certificate_of_its_path(pki: Pki, anchor: str) -> None:
    trusted = getattr(pki, anchor).der
    assert verify(pki.sign(DATA), DATA, [trusted]) == "CN=Test Vendor Signer,O=dsm-tr181 tests"


@pytest.mark.parametrize("algorithm", [hashes.SHA384(), hashes.SHA512()])
def test_other_digests_are_named_by_the_signature(pki: Pki, algorithm: hashes.HashAlgorithm) -> None:
    signature = pki.sign(DATA, algorithm=algorithm)
    assert prepare(signature, [pki.root.der]).hash_name == algorithm.name
    assert verify(signature, DATA, [pki.root.der])


def test_openssl_cms_signatures_verify(pki: Pki, tmp_path: Path) -> None:
    content = tmp_path / "du.tar"
    content.write_bytes(DATA)
    assert verify(pki.openssl_sign(content, tmp_path), DATA, [pki.root.der])
    # without signed attributes the signature covers the content's digest itself
    assert verify(pki.openssl_sign(content, tmp_path, "-noattr"), DATA, [pki.root.der])
    # PEM armour, as `openssl cms -outform PEM` writes it
    pem = tmp_path / "pem.p7s"
    signer, key = pki.signer.write(tmp_path, "s")
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-outform", "PEM", "-in", str(content), "-signer", str(signer),
         "-inkey", str(key), "-certfile", str(pki.intermediate.write(tmp_path, "i")[0]), "-out", str(pem)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert verify(pem.read_bytes(), DATA, [pki.root.der])


def test_a_signature_without_certificates_needs_the_signer_trusted(pki: Pki) -> None:
    bare = pki.sign(DATA, chain=())
    assert verify(bare, DATA, [pki.intermediate.der])  # the signer chains straight to it
    assert "not trusted" in refused(bare, DATA, [pki.root.der])  # the intermediate is missing: broken chain


def test_a_tampered_archive_is_refused(pki: Pki) -> None:
    assert "does not match" in refused(pki.sign(DATA), DATA + b"x", [pki.root.der])


def test_an_untrusted_key_is_refused(pki: Pki) -> None:
    other = Pki.create()
    assert "not trusted" in refused(other.sign(DATA), DATA, [pki.root.der])
    assert "no trusted signers" in refused(pki.sign(DATA), DATA, [])


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"not_after": NOW - DAY, "not_before": NOW - 10 * DAY}, "expired"),
        ({"not_before": NOW + DAY}, "not yet valid"),
        ({"digital_signature": False}, "keyUsage"),
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, "extendedKeyUsage"),
    ],
)
def test_a_signer_certificate_unfit_at_install_time_is_refused(pki: Pki, options: dict, why: str) -> None:
    unfit = issue("Unfit Signer", pki.intermediate, **options)
    message = refused(pki.sign(DATA, signer=unfit), DATA, [pki.root.der])
    assert "not trusted" in message


def test_a_signer_without_extended_key_usage_is_accepted(pki: Pki) -> None:
    plain = issue("Plain Signer", pki.intermediate, eku=None)
    assert verify(pki.sign(DATA, signer=plain), DATA, [pki.root.der]) == "CN=Plain Signer,O=dsm-tr181 tests"


@pytest.mark.parametrize("cut", [1, 40, 200])
def test_a_truncated_signature_is_refused(pki: Pki, cut: int) -> None:
    signature = pki.sign(DATA)
    refused(signature[:-cut], DATA, [pki.root.der])


@pytest.mark.parametrize(
    "blob", [b"", b"not a signature", b"\x30\x03\x02\x01\x01", b"-----BEGIN CMS-----\n!!\n-----END CMS-----"]
)
def test_what_is_no_cms_signature_is_refused(pki: Pki, blob: bytes) -> None:
    refused(blob, DATA, [pki.root.der])


def test_manifest_digest_hook(pki: Pki) -> None:
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    signature = pki.sign(digest.encode())
    assert images.verify_manifest_signature(digest, signature, [pki.root.der]).signer.endswith("O=dsm-tr181 tests")
    other = "sha256:" + hashlib.sha256(b"another manifest").hexdigest()
    with pytest.raises(Fault) as caught:
        images.verify_manifest_signature(other, signature, [pki.root.der])
    assert caught.value.code is FaultCode.BAD_SIGNATURE
    with pytest.raises(Fault):
        images.verify_manifest_signature(digest, Pki.create().sign(digest.encode()), [pki.root.der])
    assert images.signature_tag(digest) == "sha256-" + digest[7:] + ".sig"
    with pytest.raises(Fault):
        images.signature_tag("sha256:xyz")


def test_trust_store_rows_come_from_the_certificates(pki: Pki, tmp_path: Path) -> None:
    pki.root.write(tmp_path, "root")
    pki.intermediate.write(tmp_path, "vendor-ca")
    (tmp_path / "junk.pem").write_text("not a certificate")
    (tmp_path / "zz-copy.crt").write_bytes(pki.root.pem)  # the same certificate again
    san = issue("With SAN", pki.intermediate, san="signer.example")
    san.write(tmp_path, "with-san")
    found = {c.name: c for c in truststore.load(tmp_path)}
    assert sorted(found) == ["root", "vendor-ca", "with-san"]  # the copy, read last, is skipped
    row = found["vendor-ca"].values
    cert = pki.intermediate.cert
    assert row["Subject"] == "CN=Test Signing CA,O=dsm-tr181 tests"
    assert row["Issuer"] == "CN=Test Root CA,O=dsm-tr181 tests"
    assert row["SerialNumber"] == format(cert.serial_number, "X")
    assert row["NotBefore"] == cert.not_valid_before_utc and row["NotAfter"] == cert.not_valid_after_utc
    assert row["SignatureAlgorithm"] == "ecdsa-with-SHA256"
    assert row["SubjectAlt"] == () and found["with-san"].values["SubjectAlt"] == ("signer.example",)
    assert found["vendor-ca"].der == pki.intermediate.der
    assert truststore.load(tmp_path / "missing") == [] and truststore.load(None) == []


def test_any_damaged_byte_is_a_bad_signature_never_a_crash(pki: Pki) -> None:
    signature = pki.sign(DATA)
    outcomes = set()
    for position in range(0, len(signature), 29):
        damaged = bytearray(signature)
        damaged[position] ^= 0x5A
        try:
            verify(bytes(damaged), DATA, [pki.root.der])
            outcomes.add("verified")
        except Fault as fault:
            assert fault.code is FaultCode.BAD_SIGNATURE
            outcomes.add("refused")
    assert "refused" in outcomes


@pytest.mark.parametrize(
    "options", [(), ("-keyopt", "rsa_padding_mode:pss"), ("-noattr",)], ids=["pkcs1", "pss", "noattr"]
)
def test_rsa_signers_as_openssl_signs_with_them(pki: Pki, tmp_path: Path, options: tuple[str, ...]) -> None:
    signer = issue("RSA signer", pki.intermediate, key=rsa.generate_private_key(65537, 2048))
    content = tmp_path / "du.tar"
    content.write_bytes(DATA)
    signature = pki.openssl_sign(content, tmp_path, *options, signer=signer)
    assert verify(signature, DATA, [pki.root.der]) == "CN=RSA signer,O=dsm-tr181 tests"
    assert "does not" in refused(signature, DATA + b"!", [pki.root.der])
