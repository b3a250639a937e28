"""OCI / Docker image manifests and indexes: parsed, checked, and an index resolved to one platform.

Accepted media types: OCI image manifest and index, Docker schema 2 manifest and
manifest list. Layers may be uncompressed, gzip (OCI ``+gzip``, Docker
``rootfs.diff.tar.gzip``) or zstd (OCI ``+zstd``, with the optional ``zstandard``
package) tars; non-distributable "foreign" layers are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.imageref import Platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
MAX_MANIFEST_BYTES = 4 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    hex: str  # sha256 of the blob
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hex


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]


def load_json(data: bytes, what: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {what} is not a JSON object")
    return value


def media_type(document: dict[str, Any], announced: str) -> str:
    """The document's own mediaType, else the one the server announced, else guessed from its shape."""
    own = document.get("mediaType")
    if isinstance(own, str) and own:
        return own
    if announced in (*MANIFEST_TYPES, *INDEX_TYPES):
        return announced
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def descriptor(value: Any, label: str) -> Descriptor:
    if not isinstance(value, dict):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: a descriptor is not a JSON object")
    digest, size, kind = value.get("digest"), value.get("size"), value.get("mediaType", "")
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: unsupported or malformed digest {digest!r} (sha256 only)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: descriptor {digest} has no valid size")
    platform = None
    if isinstance(value.get("platform"), dict):
        p = value["platform"]
        platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
    annotations = value.get("annotations") or {}
    return Descriptor(str(kind), match[1], size, platform, _strings(annotations, label))


def _strings(value: Any, label: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: annotations must map strings to strings")
    return dict(value)


def parse_manifest(document: dict[str, Any], label: str) -> Manifest:
    config = descriptor(document.get("config"), f"{label}: config")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the manifest has no layers list")
    parsed = tuple(descriptor(layer, f"{label}: layer") for layer in layers)
    for layer in parsed:
        if layer.media_type not in LAYER_TYPES:
            raise Fault(
                FaultCode.CORRUPT_DATA, f"{label}: layer {layer.digest}: unsupported media type {layer.media_type!r}"
            )
    return Manifest(config, parsed, _strings(document.get("annotations") or {}, label))


def select(document: dict[str, Any], platform: Platform, label: str) -> Descriptor:
    """The index entry for ``platform`` (exact variant first); DU_EE_MISMATCH when none fits."""
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the index has no manifests list")
    best: tuple[int, Descriptor] | None = None
    offered = []
    for value in entries:
        entry = descriptor(value, f"{label}: index entry")
        if entry.platform is None:
            continue
        offered.append(str(entry.platform))
        score = platform.score(entry.platform)
        if score and (best is None or score > best[0]):
            best = (score, entry)
    if best is None and not offered and len(entries) == 1:  # an image layout's index of one image
        return descriptor(entries[0], f"{label}: index entry")
    if best is None:
        raise Fault(
            FaultCode.DU_EE_MISMATCH,
            f"{label}: no image for this device's platform {platform} (offered: {', '.join(offered) or 'none'})",
        )
    return best[1]
