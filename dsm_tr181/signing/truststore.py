"""The trust store on disk: PEM certificates in one directory, as Device.Security.Certificate rows.

Each ``*.pem`` / ``*.crt`` file of the directory holds one certificate; its file name
without the extension is its stable name (an ExecEnv's ``signers`` setting uses it).
Files that hold no readable certificate are skipped with a warning, as are duplicates
(same Issuer and SerialNumber: the table's unique key).

cryptography's x509 costs the daemon ~14 MiB of RSS: it is imported when a certificate is
read, not for an empty or absent trust store.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.lcm.ports import TrustedCertificate
from dsm_tr181.schema.types import Value

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

_SUFFIXES = (".pem", ".crt")


def load(directory: Path | None) -> list[TrustedCertificate]:
    """Every certificate of ``directory`` (none when it is None or missing), by file name."""
    if directory is None or not directory.is_dir():
        if directory is not None:
            log.warning("trust store %s does not exist: no trusted signers", directory)
        return []
    found: list[TrustedCertificate] = []
    keys: set[tuple[str, str]] = set()
    for path in sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file()):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("trust store: %s skipped: %s", path, exc)
            continue
        values = row_values(cert, datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0))
        key = (str(values["Issuer"]), str(values["SerialNumber"]))
        if key in keys:
            log.warning("trust store: %s skipped: the same certificate is already in the store", path)
            continue
        keys.add(key)
        found.append(TrustedCertificate(name=path.stem, der=cert.public_bytes(Encoding.DER), values=values))
    log.info("trust store %s: %d certificates", directory, len(found))
    return found


def row_values(cert: x509.Certificate, modified: datetime) -> dict[str, Value]:
    """The Device.Security.Certificate.{i}. values (but Enable) of ``cert``."""
    return {
        "LastModif": modified,
        "SerialNumber": format(cert.serial_number, "X")[:64],
        "Issuer": cert.issuer.rfc4514_string()[:256],
        "NotBefore": cert.not_valid_before_utc,
        "NotAfter": cert.not_valid_after_utc,
        "Subject": cert.subject.rfc4514_string()[:256],
        "SubjectAlt": _subject_alt(cert),
        "SignatureAlgorithm": _algorithm(cert)[:256],
    }


def _subject_alt(cert: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    items: list[str] = []
    for name in names:
        value = name.value
        text = value.rfc4514_string() if isinstance(value, x509.Name) else str(value)
        items.append(text)
    # the list as a whole is at most 256 characters (TR-181 list size)
    while items and len(",".join(items)) > 256:
        items.pop()
    return tuple(items)


def _algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return oid._name if oid._name != "Unknown OID" else oid.dotted_string
