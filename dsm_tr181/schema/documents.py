"""Where the data-model documents are, and the error for unusable ones (no XML parsing here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class SchemaError(Exception):
    """The data-model XML is unusable (bad syntax, unknown type, dangling reference)."""


def default_datamodel_dir() -> Path:
    """Where the product's data-model documents are: env, source checkout, or install."""
    candidates: list[str | Path] = [
        os.environ.get("DSM_DATAMODEL_DIR", ""),
        Path(__file__).resolve().parents[2] / "datamodel",
        Path(sys.prefix) / "share" / "dsm-tr181" / "datamodel",
        Path("/usr/share/dsm-tr181/datamodel"),
    ]
    for candidate in candidates:
        if candidate and any(Path(candidate).glob("*.xml")):
            return Path(candidate)
    raise SchemaError("no data-model directory found (set DSM_DATAMODEL_DIR)")


def documents_digest(directory: Path) -> str:
    """A digest of every XML document of ``directory`` (names and contents)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.xml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
