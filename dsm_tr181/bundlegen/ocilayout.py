"""Writing OCI image layouts: layers as tar files from entry lists, blobs, manifests, indexes.

Used by ``dsm-bundle compose --oci`` and, through ``dsm_tools.sample_image``, by the tests,
the README example and ``bench/image_bench.py``. A layer is a list of :class:`Entry`
(files, directories, symlinks; whiteouts ``.wh.NAME`` and opaque markers
``.wh..wh..opq`` are plain empty files by name).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Entry:
    path: str  # inside the image, without a leading slash
    data: bytes = b""
    kind: str = "file"  # file, dir, symlink
    target: str = ""  # symlink target
    mode: int = 0o644


def file(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(path, data.encode() if isinstance(data, str) else data, mode=mode)


def layer_tar(entries: Sequence[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.mtime = entry.mode, 1_700_000_000
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


@dataclass
class Layout:
    """An OCI image layout being written to ``root``."""

    root: Path
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}

    def layer(self, entries: Sequence[Entry], *, compress: bool = True) -> tuple[dict[str, Any], str]:
        """Store a layer blob; its descriptor and diff id."""
        raw = layer_tar(entries)
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        if compress:
            return self.blob(gzip.compress(raw, mtime=0), LAYER_GZIP), diff_id
        return self.blob(raw, LAYER_TAR), diff_id

    def image(
        self,
        layers: Sequence[Sequence[Entry] | tuple[dict[str, Any], str]],
        config: Mapping[str, Any],
        *,
        architecture: str = "amd64",
        variant: str = "",
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Store an image (layers are entry lists or already stored (descriptor, diff id)); its manifest descriptor."""
        stored = [item if isinstance(item, tuple) else self.layer(item) for item in layers]
        image_config = {
            "architecture": architecture,
            "os": "linux",
            **({"variant": variant} if variant else {}),
            "config": dict(config),
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in stored]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": self.blob(json.dumps(image_config).encode(), CONFIG),
            "layers": [descriptor for descriptor, _ in stored],
            **({"annotations": dict(annotations)} if annotations else {}),
        }
        platform = {"architecture": architecture, "os": "linux", **({"variant": variant} if variant else {})}
        return self.blob(json.dumps(manifest).encode(), MANIFEST, platform=platform)

    def tag(self, descriptor: Mapping[str, Any], tag: str) -> None:
        """Name a manifest (or index) in index.json."""
        self.manifests.append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": self.manifests}
        (self.root / "index.json").write_text(json.dumps(index))

    def index(self, manifests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Store a multi-platform image index over ``manifests``; its descriptor."""
        return self.blob(
            json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": list(manifests)}).encode(), INDEX
        )
