"""Where an image's manifests and blobs come from: a registry, an OCI image layout, a ``docker save`` archive.

Each source hands out documents and blobs as they are stored; the image packager
checks every one against its digest while reading it, whatever the source.

- :class:`RegistrySource`: ``oci://`` references (:mod:`~dsm_tr181.packagers.registry`).
- :class:`LayoutSource`: an OCI image layout (``oci-layout`` + ``index.json`` +
  ``blobs/sha256/``), as a directory or an uncompressed tar of one.
- :class:`DockerArchiveSource`: ``docker save`` output (``manifest.json`` naming the
  config and the layer tars). Its old format names layers by id, not digest: those
  are checked against the image config's ``rootfs.diff_ids`` (they are uncompressed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.httpget import HttpOptions
from dsm_tr181.packagers.imagemanifest import MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST, load_json
from dsm_tr181.packagers.imageref import ImageRef
from dsm_tr181.packagers.registry import Registry
from dsm_tr181.packagers.worker import Cancel

OCI_LAYOUT = "oci-layout"
DOCKER_MANIFEST = "manifest.json"
_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_CONFIG = "application/vnd.oci.image.config.v1+json"


class ImageSource(Protocol):
    label: str
    name: str  # a fallback DU name (repository, directory or archive name)
    tag: str  # a fallback version ("" when none)

    def top(self) -> tuple[bytes, str]:
        """The manifest or index the source names: (bytes, announced media type)."""
        ...

    def manifest(self, hexdigest: str) -> tuple[bytes, str]: ...

    def blob(self, hexdigest: str) -> Any:
        """A context manager giving a binary stream of the blob (readinto), with
        ``abort`` to end a blocked read from another thread."""
        ...


class RegistrySource:
    def __init__(
        self, ref: ImageRef, username: str, password: str, options: HttpOptions, plain_http: bool, cancel: Cancel
    ) -> None:
        self.ref = ref
        self.label = str(ref)
        self.name = ref.repository.rpartition("/")[2]
        self.tag = "" if ref.tag == "latest" else ref.tag
        self.registry = Registry(ref, username, password, options, plain_http, cancel)

    def top(self) -> tuple[bytes, str]:
        return self.registry.manifest(self.ref.reference)

    def manifest(self, hexdigest: str) -> tuple[bytes, str]:
        return self.registry.manifest("sha256:" + hexdigest)

    @contextmanager
    def blob(self, hexdigest: str) -> Iterator[BinaryIO]:
        with self.registry.blob("sha256:" + hexdigest) as reply:
            yield reply.response


class _Files(Protocol):
    def read_small(self, name: str) -> bytes | None: ...

    def open(self, name: str) -> IO[bytes] | None: ...


class _Directory:
    """Files of a layout directory; none followed through a final symlink."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = root
        self.label = label

    def open(self, name: str) -> IO[bytes] | None:
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{self.label}: {name}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: {name} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def read_small(self, name: str) -> bytes | None:
        file = self.open(name)
        if file is None:
            return None
        with file:
            return _bounded(file.read(MAX_MANIFEST_BYTES + 1), name, self.label)


class _Tar:
    """Regular files of an uncompressed tar, read in place (random access)."""

    def __init__(self, file: BinaryIO, label: str) -> None:
        self.label = label
        try:
            self._tar = tarfile.open(fileobj=file, mode="r:")  # noqa: SIM115 - lives as long as the file
        except tarfile.TarError as exc:
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: not an uncompressed tar archive ({exc})") from None
        self._members = {_normal(m.name): m for m in self._tar.getmembers() if m.isreg()}

    def open(self, name: str) -> IO[bytes] | None:
        member = self._members.get(_normal(name))
        return None if member is None else self._tar.extractfile(member)

    def read_small(self, name: str) -> bytes | None:
        file = self.open(name)
        return None if file is None else _bounded(file.read(MAX_MANIFEST_BYTES + 1), name, self.label)


def _normal(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _bounded(data: bytes, name: str, label: str) -> bytes:
    if len(data) > MAX_MANIFEST_BYTES:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {name} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def archive_kind(names: set[str]) -> str:
    """ "layout", "docker" or "" for the top-level names of a directory or tar."""
    if OCI_LAYOUT in names:
        return "layout"
    if DOCKER_MANIFEST in names and "config.json" not in names:  # a flat DU bundle has a manifest.json too
        return "docker"
    return ""


def tar_top_names(file: BinaryIO) -> set[str]:
    """Top-level names of regular files in an uncompressed tar (headers only); empty when it is no such tar."""
    try:
        names = _plain_top_names(file.fileno())
        if names is not None:
            return names
        names = set()
        with tarfile.open(fileobj=file, mode="r:") as tar:
            while (member := tar.next()) is not None:
                if member.isreg() and "/" not in _normal(member.name):
                    names.add(_normal(member.name))
                # tarfile keeps every TarInfo otherwise (~50 MB at 100k members); typeshed omits the list
                tar.members.clear()  # type: ignore[attr-defined]
        return names
    except tarfile.TarError:
        return set()
    finally:
        file.seek(0)


_BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(_BLOCK)
_PLAIN_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_PLAIN_OTHER = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE)
_MAX_EXTENDED = 1 << 20


def _plain_top_names(fd: int) -> set[str] | None:
    """What :func:`tar_top_names` finds, for the archives DUs come in, reading each header once with
    ``pread`` and parsing only its name, size and type: tarfile parses every field of every
    header, pax records included (2.5 ms of a 10 MB install, before anything is unpacked). None for
    anything but ustar/GNU headers of plain member types, each alone or after one pax header
    (``path`` and ``size`` records) or one GNU long name, ending in a zero block: tarfile decides
    those, and any header it would refuse or read otherwise."""
    names: set[str] = set()
    offset = 0
    extended: dict[bytes, bytes] | None = None  # the pax records or GNU long name for the next member
    while True:
        block = os.pread(fd, _BLOCK, offset)
        if len(block) < _BLOCK or block == _ZERO_BLOCK:
            return names if block == _ZERO_BLOCK and offset and extended is None else None
        size = _octal(block[124:136])
        checksum = _octal(block[148:156])
        if size is None or checksum is None or checksum != 256 + sum(block[:148]) + sum(block[156:]):
            return None
        kind = block[156:157]
        offset += _BLOCK
        if kind in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME):
            if extended is not None or size > _MAX_EXTENDED:
                return None
            data = os.pread(fd, size, offset)
            extended = _pax_records(data) if kind == tarfile.XHDTYPE else {b"path": data.split(b"\0", 1)[0]}
            if extended is None or len(data) < size:
                return None
            offset += -(-size // _BLOCK) * _BLOCK
            continue
        if kind not in _PLAIN_REGULAR and kind not in _PLAIN_OTHER:
            return None
        name = block[:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        regular = kind in _PLAIN_REGULAR and not (kind == tarfile.AREGTYPE and name.endswith(b"/"))
        if prefix:
            name = prefix + b"/" + name
        if extended is not None:
            name = extended.get(b"path", name)
            if b"size" in extended:
                size = _octal(extended[b"size"], base=10)
                if size is None:
                    return None
            extended = None
        if regular:
            top = _normal(name.decode("utf-8", "surrogateescape"))
            if "/" not in top:
                names.add(top)
            offset += -(-size // _BLOCK) * _BLOCK


def _octal(field: bytes, base: int = 8) -> int | None:
    """A header's number, or a pax record's (``base`` 10); None for base-256 and anything else
    that tarfile reads its own way."""
    text = field.split(b"\0", 1)[0].strip()
    if not text and base == 8:
        return 0
    if not text.isdigit() or (base == 8 and not set(text) <= set(b"01234567")):
        return None
    return int(text, base)


def _pax_records(data: bytes) -> dict[bytes, bytes] | None:
    """A pax header's ``path`` and ``size``; None when it holds what changes how names are read."""
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data) and data[position]:
        space = data.find(b" ", position)
        length = data[position:space]
        if space < 0 or not length.isdigit() or int(length) <= space - position:
            return None
        record = data[space + 1 : position + int(length)]
        keyword, equals, value = record.partition(b"=")
        if not equals or not record.endswith(b"\n") or keyword == b"hdrcharset" or keyword.startswith(b"GNU.sparse"):
            return None
        if keyword in (b"path", b"size"):
            records[keyword] = value[:-1]
        position += int(length)
    if b"path" in records:
        records[b"path"] = records[b"path"].rstrip(b"/")
    return records


@contextmanager
def local_source(path: Path, label: str) -> Iterator[ImageSource]:
    """The image in a layout directory, or in a tar of a layout or of ``docker save``."""
    if path.is_dir():
        files: _Files = _Directory(path, label)
        kind = archive_kind(set(os.listdir(path)))
        yield _make(kind, files, path.name, label)
        return
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Fault(FaultCode.FILE_ACCESS_FAILURE, f"{label}: cannot open ({exc.strerror})") from None
    with file:
        yield archive_source(file, path.name, label)


def archive_source(file: BinaryIO, file_name: str, label: str) -> ImageSource:
    """The image in an uncompressed tar read in place (a layout's or ``docker save``'s)."""
    kind = archive_kind(tar_top_names(file))
    return _make(kind, _Tar(file, label), file_name.removesuffix(".tar"), label)


PEEK_BYTES = 8192


def looks_like_image_tar(start: bytes) -> bool:
    """Whether the first bytes of an uncompressed tar start an image archive.

    For a remote archive only its start is looked at: the first member (after ``./`` and
    pax / GNU long-name headers) of an image tar is one of its top-level names
    (``oci-layout``, ``index.json``, ``blobs/``, ``manifest.json``, ``repositories``) or an
    old ``docker save`` layer id (``<64 hex>/`` or ``<64 hex>.json``); a DU archive starts
    with ``config.json``, ``rootfs/`` or its top folder.
    """
    offset = 0
    while offset + 512 <= len(start):
        header = start[offset : offset + 512]
        if header[257:262] != b"ustar":
            return False
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return False
        offset += 512
        if header[156:157] in (b"x", b"g", b"L", b"K"):  # metadata for the next member
            offset += -(-size // 512) * 512
            continue
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        top = _normal(f"{prefix}/{name}" if prefix else name).split("/", 1)[0]
        if not top:
            offset += -(-size // 512) * 512
            continue
        if top in (OCI_LAYOUT, "index.json", "blobs", DOCKER_MANIFEST, "repositories"):
            return True
        stem = top.removesuffix(".json")
        return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)
    return False


def _make(kind: str, files: _Files, name: str, label: str) -> ImageSource:
    if kind == "layout":
        return LayoutSource(files, name, label)
    if kind == "docker":
        return DockerArchiveSource(files, name, label)
    raise Fault(FaultCode.CORRUPT_DATA, f"{label}: neither an OCI image layout nor a docker save archive")


class LayoutSource:
    def __init__(self, files: _Files, name: str, label: str) -> None:
        self._files = files
        self.label = label
        self.name = name
        self.tag = ""
        layout = load_json(self._need(OCI_LAYOUT), OCI_LAYOUT, label)
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise Fault(
                FaultCode.CORRUPT_DATA, f"{label}: unsupported imageLayoutVersion {layout.get('imageLayoutVersion')!r}"
            )

    def _need(self, name: str) -> bytes:
        data = self._files.read_small(name)
        if data is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: {name} is missing")
        return data

    def top(self) -> tuple[bytes, str]:
        return self._need("index.json"), OCI_INDEX

    def manifest(self, hexdigest: str) -> tuple[bytes, str]:
        return self._need(f"blobs/sha256/{hexdigest}"), ""

    @contextmanager
    def blob(self, hexdigest: str) -> Iterator[IO[bytes]]:
        file = self._files.open(f"blobs/sha256/{hexdigest}")
        if file is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: blob sha256:{hexdigest} is missing")
        with file:
            yield file


class DockerArchiveSource:
    def __init__(self, files: _Files, name: str, label: str) -> None:
        self._files = files
        self.label = label
        self.name = name
        self.tag = ""
        try:
            entries = json.loads(self._need(DOCKER_MANIFEST))
            entry = entries[0]
            config_name, layer_names = entry["Config"], entry["Layers"]
            if not isinstance(config_name, str) or not all(isinstance(n, str) for n in layer_names):
                raise TypeError
        except (ValueError, TypeError, KeyError, IndexError):
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {DOCKER_MANIFEST} is not a docker save manifest") from None
        tags = entry.get("RepoTags") or []
        if tags and isinstance(tags[0], str) and ":" in tags[0]:
            self.name, _, self.tag = tags[0].rpartition(":")
            self.name = self.name.rpartition("/")[2]
        config = self._need(config_name)
        diff_ids = load_json(config, "image config", label).get("rootfs", {}).get("diff_ids", [])
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image config's diff_ids do not match the layers")
        self._blobs = {hashlib.sha256(config).hexdigest(): config_name}
        layers = []
        for layer_name, diff_id in zip(layer_names, diff_ids, strict=True):
            hexdigest = _digest_in_name(layer_name) or str(diff_id).removeprefix("sha256:")
            self._blobs[hexdigest] = layer_name
            file = self._files.open(layer_name)
            if file is None:
                raise Fault(FaultCode.CORRUPT_DATA, f"{label}: layer {layer_name} is missing")
            size = _size(file)
            layers.append({"mediaType": _DOCKER_LAYER, "digest": "sha256:" + hexdigest, "size": size})
        config_descriptor = {
            "mediaType": _CONFIG,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        }
        self._manifest = json.dumps({"mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}).encode()

    def _need(self, name: str) -> bytes:
        data = self._files.read_small(name)
        if data is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: {name} is missing")
        return data

    def top(self) -> tuple[bytes, str]:
        return self._manifest, OCI_MANIFEST

    def manifest(self, hexdigest: str) -> tuple[bytes, str]:
        raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: a docker save archive holds no manifest sha256:{hexdigest}")

    @contextmanager
    def blob(self, hexdigest: str) -> Iterator[IO[bytes]]:
        name = self._blobs.get(hexdigest)
        file = self._files.open(name) if name else None
        if file is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{self.label}: blob sha256:{hexdigest} is missing")
        with file:
            yield file


def _digest_in_name(name: str) -> str:
    parts = _normal(name).split("/")
    if len(parts) == 3 and parts[:2] == ["blobs", "sha256"] and len(parts[2]) == 64:
        return parts[2]
    return ""


def _size(file: IO[bytes]) -> int:
    with file:
        file.seek(0, io.SEEK_END)
        return file.tell()
