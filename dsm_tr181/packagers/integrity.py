"""Archive digests: the ``sha256:<hex>`` form callers give, and sha256sum files.

A digest is kept as 64 lowercase hex digits inside the packager and shown as
``sha256:<hex>`` outside it (BundleInfo.digest, messages).
"""

from __future__ import annotations

import re

from dsm_tr181.errors import Fault, FaultCode

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-fA-F]{64}")
# One sha256sum line: "<hex>  name" (text mode) or "<hex> *name" (binary mode).
_SUM_LINE = re.compile(r"(?P<hex>[0-9a-fA-F]{64})(?:\s+\*?(?P<name>.+))?")


def parse_expected(digest: str) -> str:
    """The hex of a caller's ``sha256:<hex>`` digest; "" when none was given."""
    if not digest:
        return ""
    algorithm, sep, hexdigest = digest.partition(":")
    if not sep or algorithm.lower() != "sha256" or not _HEX.fullmatch(hexdigest):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"digest {digest!r} is not of the form sha256:<64 hex digits>")
    return hexdigest.lower()


def parse_checksum_file(text: str, archive_name: str, where: str) -> str:
    """The hex for ``archive_name`` in a sha256sum-style file (or one bare digest).

    One line is taken whatever file name it states (build paths rarely match the
    served name); with several lines, the one naming ``archive_name`` is taken.
    """
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _SUM_LINE.fullmatch(line.strip())
        if match is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{where}: not a sha256 checksum line: {line[:80]!r}")
        entries.append((match["hex"].lower(), (match["name"] or "").rsplit("/", 1)[-1]))
    if len(entries) == 1:
        return entries[0][0]
    for hexdigest, name in entries:
        if name == archive_name:
            return hexdigest
    raise Fault(FaultCode.CORRUPT_DATA, f"{where}: holds no checksum for {archive_name!r}")


def verify(actual: str, expected: str, where: str) -> None:
    """Raise CORRUPT_DATA unless ``actual`` equals ``expected`` (both hex)."""
    if actual != expected:
        raise Fault(FaultCode.CORRUPT_DATA, f"{where}: sha256 is {actual}, expected {expected}")
