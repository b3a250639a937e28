"""Crafted DU archives: a small valid bundle, with one hostile thing in it.

Each archive is written with the standard library's tarfile (pax format), whose
``pax_headers`` take priority over the values it would compute, so a header can
say what no real file system would (a NUL in a path, a uid of 10^20, mtime NaN).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dsm_tr181.sample_bundle import oci_config

CONFIG = oci_config(["/bin/true"], annotations={"org.opencontainers.image.title": "crafted"})


def member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, pax: Mapping[str, str] | None = None,
           linkname: str = "", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.pax_headers = dict(pax or {})
    return info, data


def bundle_members(config: bytes | None = None, manifest: bytes | None = None) -> list[tuple[tarfile.TarInfo, bytes]]:
    """config.json, rootfs/ and an optional manifest.json: a bundle the packager accepts."""
    members = [
        member("config.json", config if config is not None else json.dumps(CONFIG).encode()),
        member("rootfs", kind=tarfile.DIRTYPE, mode=0o755),
        member("rootfs/hello.txt", b"hello\n"),
    ]
    if manifest is not None:
        members.append(member("manifest.json", manifest))
    return members


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def deep_json(depth: int) -> bytes:
    """A JSON object nested ``depth`` levels deep (json.loads recurses once per level)."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def crafted(name: str) -> bytes:
    """The archive the adversarial run used for ``name`` (see CRAFTED)."""
    return tar_bytes(CRAFTED[name]())


def _with(extra: tuple[tarfile.TarInfo, bytes]) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [*bundle_members(), extra]


def _config_with(**changes: Any) -> bytes:
    return json.dumps({**CONFIG, **changes}).encode()


CRAFTED = {
    "deep config.json": lambda: bundle_members(config=deep_json(100_000)),
    "deep manifest.json": lambda: bundle_members(manifest=deep_json(100_000)),
    "NUL in a pax path": lambda: _with(member("rootfs/x", b"x", pax={"path": "rootfs/a\0b"})),
    "NUL in a link target": lambda: _with(member("rootfs/l", kind=tarfile.SYMTYPE, pax={"linkpath": "a\0b"})),
    "pax uid 10^20": lambda: _with(member("rootfs/u", b"u", pax={"uid": str(10**20)})),
    "pax mtime nan": lambda: _with(member("rootfs/n", b"n", pax={"mtime": "nan"})),
    "pax mtime inf": lambda: _with(member("rootfs/i", b"i", pax={"mtime": "inf"})),
    "lone surrogate in the title": lambda: bundle_members(
        config=_config_with(annotations={"org.opencontainers.image.title": "\ud800x"})
    ),
}


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / (name.replace(" ", "-").replace("^", "") + ".tar")
    path.write_bytes(data)
    return path
