"""Build OCI images without any container tool: layers as tar files, an image layout on disk.

Used by the README example, the tests and ``bench/image_bench.py``:
``python -m dsm_tr181.sample_image OUT_DIR`` writes an OCI image layout (tag ``1.0``)
of a busybox image (from Debian's ``busybox-static``) that prints a greeting and
waits; push it with ``skopeo copy oci:OUT_DIR:1.0 docker://HOST/app:1.0``.

A layer is a list of :class:`Entry` (files, directories, symlinks, whiteouts
``.wh.NAME`` and opaque markers ``.wh..wh..opq`` are plain empty files by name).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsm_tr181.sample_bundle import APPLETS, BUSYBOX

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


def busybox_layer(busybox: Path = BUSYBOX) -> list[Entry]:
    """/bin/busybox with its applet links, /etc/passwd and /etc/group."""
    entries = [Entry(d, kind="dir", mode=0o755) for d in ("bin", "etc", "tmp", "proc", "dev", "sys")]
    entries.append(Entry("bin/busybox", busybox.read_bytes(), mode=0o755))
    entries += [Entry(f"bin/{applet}", kind="symlink", target="busybox") for applet in APPLETS]
    entries.append(file("etc/passwd", "root:x:0:0:root:/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"))
    entries.append(file("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:\n"))
    return entries


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


def greeter(layout: Layout, greeting: str = "hello from an image", tag: str = "1.0") -> dict[str, Any]:
    """A busybox image that prints ``greeting`` and waits for SIGTERM."""
    descriptor = layout.image(
        [busybox_layer()],
        {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [f"trap 'exit 0' TERM; echo {greeting}; sleep 3600 & wait"],
            "Env": ["PATH=/bin", "GREETING=" + greeting],
        },
        annotations={"org.opencontainers.image.title": "greeter", "org.opencontainers.image.version": tag},
    )
    layout.tag(descriptor, tag)
    return descriptor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a busybox OCI image layout (tag 1.0).")
    parser.add_argument("out", type=Path, help="directory to write the image layout into")
    parser.add_argument("--greeting", default="hello from an image")
    args = parser.parse_args(argv)
    greeter(Layout(args.out), args.greeting)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
