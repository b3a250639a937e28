"""The ``image`` packager: OCI images (registry references, image layouts, docker save archives) → bundles.

Sources: ``oci://`` references, image layouts (directories) and image archives (local, or
over http(s): downloaded whole into an unnamed temporary file first, as they are read in
any order; a caller's ``sha256:`` digest is checked).

``unpack`` resolves the source's manifest (an index to this device's platform,
architecture and variant), reads the image config, then fetches each layer the
layer store lacks, streaming it straight into safe extraction
(:mod:`~dsm_tr181.packagers.extract`, the tar packager's rules and faults) while
hashing it; a layer joins the store only once its size and digest match its
descriptor. The root filesystem is then assembled from the stored layers
(:mod:`~dsm_tr181.packagers.layers`), config.json generated from the image config
(:mod:`~dsm_tr181.packagers.imageconfig`), and the bundle renamed to ``target``.
Before any layer is fetched, the image's signature is checked
(:mod:`~dsm_tr181.packagers.imagesignature`): a ``Signature`` input, or for an ``oci://``
reference a ``sha256-<hex>.sig`` tag in its repository.
Any failure removes the staging directory, the bundle's layer references and every
layer no other bundle uses. A bundle's share of its layers (:meth:`ImagePackager.shared_kib`)
is each layer's unpacked size divided by the number of live bundles using it, so it changes
whenever another bundle starts or stops using one of its layers; the LCM asks again after
every install, update and uninstall (:mod:`dsm_tr181.lcm.monitoring`).

Configuration (section ``[packager.image]``), every key optional:

=====================  =========  ============================================
key                    default    meaning
=====================  =========  ============================================
layer_dir              (auto)     the layer store; default ``<bundle_dir>/../layers`` (same filesystem: hard links)
platform               (host)     ``os/architecture[/variant]`` indexes are resolved to
plain_http             []         registries (``host:port``) spoken to over http instead of https
max_image_bytes        1 GiB      most bytes of layers one install may download
max_unpacked_bytes     2 GiB      largest unpacked size of one layer
max_entries            200000     most members of one layer
allow_special_files    false      accept device nodes and FIFOs in layers
ca_file                (none)     PEM CA file for https registries, replacing the system store
verify_tls             true       verify https certificates and host names
connect_timeout        15         seconds for TCP connect + TLS handshake
read_timeout           60         seconds any later wait for data may take
max_redirects          5          HTTP redirects followed
max_signature_bytes    65536      largest image signature (Signature input or registry-stored)
platform_name          ""         this device's RDK platform name (``dsm-bundle generate`` templates)
compatibility_key      ""         this firmware's compatibility key; with platform_name, DUs made for
                                  another platform or key are refused (see ``packagers/dispatch.py``)
=====================  =========  ============================================
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, LayerProgress, PackageSource, ProgressCallback
from dsm_tr181.lcm.urls import display_url
from dsm_tr181.packagers import imagesignature, integrity
from dsm_tr181.packagers.bundle import CONFIG, Layout, _check_symlinks, claim, describe
from dsm_tr181.packagers.extract import ArchiveStream, ExtractLimits, extract_archive
from dsm_tr181.packagers.fetch import FetchOptions, body_size, copy_hashed, local_path
from dsm_tr181.packagers.httpget import BasicAuth, HttpOptions, open_url
from dsm_tr181.packagers.imageconfig import runtime_config
from dsm_tr181.packagers.imagemanifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Manifest,
    load_json,
    media_type,
    parse_manifest,
    select,
)
from dsm_tr181.packagers.imageref import Platform, is_image_ref, parse_ref
from dsm_tr181.packagers.imagesources import ImageSource, RegistrySource, archive_source, local_source
from dsm_tr181.packagers.layers import apply_layer
from dsm_tr181.packagers.layerstore import LayerStore
from dsm_tr181.packagers.worker import Cancel, disk_fault, make_staging, remove_tree, unpack_in_thread
from dsm_tr181.sections import Invalid, SectionError, build_section

log = logging.getLogger(__name__)

_MIB = 1 << 20
_CHUNK = 256 * 1024
_MAX_CONFIG_BYTES = 4 * _MIB
_MAX_NESTING = 3


@dataclass(frozen=True)
class ImagePackagerConfig:
    layer_dir: Path | None = None
    platform: str = ""
    plain_http: tuple[str, ...] = ()
    max_image_bytes: int = 1024 * _MIB
    max_unpacked_bytes: int = 2048 * _MIB
    max_entries: int = 200_000
    allow_special_files: bool = False
    ca_file: Path | None = None
    verify_tls: bool = True
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    max_redirects: int = 5
    max_signature_bytes: int = 65536
    platform_name: str = ""
    compatibility_key: str = ""

    def __post_init__(self) -> None:
        positive = ("max_image_bytes", "max_unpacked_bytes", "max_entries", "connect_timeout", "read_timeout")
        for name in (*positive, "max_signature_bytes"):
            if getattr(self, name) <= 0:
                raise Invalid(name, "must be positive")
        if self.max_redirects < 0:
            raise Invalid("max_redirects", "must not be negative")
        if self.platform:
            try:
                Platform.parse(self.platform)
            except ValueError as exc:
                raise Invalid("platform", str(exc)) from None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ImagePackagerConfig:
        return build_section(cls, section, "packager.image")

    def http(self) -> HttpOptions:
        return HttpOptions(self.ca_file, self.verify_tls, self.connect_timeout, self.read_timeout, self.max_redirects)

    def device_platform(self) -> Platform:
        return Platform.parse(self.platform) if self.platform else Platform.host()


# (image config, manifest annotations, root filesystem path, label) → the bundle's config.json
ConfigMaker = Callable[[dict[str, Any], dict[str, str], str, str], dict[str, Any]]


class ImagePackager:
    """Packager for OCI images (see the module docstring).

    ``make_config`` builds config.json; the bundle generator (:mod:`dsm_tr181.bundlegen`)
    passes its own to start from what BundleGen starts from.
    """

    def __init__(
        self,
        config: ImagePackagerConfig | None = None,
        default_layer_dir: Path | None = None,
        make_config: ConfigMaker = runtime_config,
    ) -> None:
        self.config = config or ImagePackagerConfig()
        self._make_config = make_config
        layer_dir = self.config.layer_dir or default_layer_dir
        if layer_dir is None:
            raise SectionError("packager.image", "layer_dir", "must be set")
        self.store = LayerStore(layer_dir)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], default_layer_dir: Path | None = None) -> ImagePackager:
        return cls(ImagePackagerConfig.from_config(section), default_layer_dir)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> ImagePackager:
        """The adapter factory (dsm_tr181/adapters.py): ``context.state_dir`` is the bundle
        directory; the layer store defaults to ``layers`` beside it."""
        return cls.from_config(section, context.state_dir.parent / "layers")

    def __repr__(self) -> str:
        return f"ImagePackager({self.config!r}, store={self.store.root})"

    async def unpack(self, source: PackageSource, target: Path, progress: ProgressCallback) -> BundleInfo:
        return await unpack_in_thread(lambda cancel: self._unpack(source, target, progress, cancel), self.remove)

    async def remove(self, bundle: Path) -> None:
        """Delete the bundle (or a directory of bundles) and the layers nothing else uses."""
        await asyncio.to_thread(self._remove, bundle)

    def shared_kib(self, bundle: Path) -> int | None:
        """The bundle's share of its layers (:class:`~dsm_tr181.lcm.ports.SharedStorage`)."""
        layers = self.store.layers_of(bundle) if self.store.root.is_dir() else None
        return None if layers is None else -(-self.store.share_bytes(layers) // 1024)

    def _remove(self, bundle: Path) -> None:
        remove_tree(bundle)
        if self.store.root.is_dir():
            self.store.release(bundle)

    def _unpack(self, source: PackageSource, target: Path, progress: ProgressCallback, cancel: Cancel) -> BundleInfo:
        if os.path.lexists(target) or not target.parent.is_dir():
            raise Fault(FaultCode.INTERNAL_ERROR, f"cannot unpack into {target}: it exists or has no parent")
        self.store.prepare()
        with self._open(source, cancel) as image:
            manifest, manifest_hex, top_hex = self._resolve(image)
            signed_by = imagesignature.check(source, image, top_hex, manifest_hex, self._fetch_options())
            layers = [layer.hex for layer in manifest.layers]
            self.store.begin(target, layers)
            try:
                info = self._install(image, manifest, manifest_hex, target, progress, cancel)
                info = dataclasses.replace(info, signed_by=signed_by)
            except BaseException:
                self.store.release(target)
                raise
            finally:
                self.store.end(target)
        log.info("%s: unpacked into %s (%d layers)", image.label, target, len(layers))
        return info

    @contextmanager
    def _open(self, source: PackageSource, cancel: Cancel) -> Iterator[ImageSource]:
        if is_image_ref(source.url):
            ref = parse_ref(source.url)
            plain = ref.host in self.config.plain_http
            yield RegistrySource(ref, source.username, source.password, self.config.http(), plain, cancel)
            return
        label = display_url(source.url)
        path = local_path(source.url, label)
        if path is not None:
            with local_source(path, label) as image:
                yield image
            return
        with self._download(source, label, cancel) as file:
            yield archive_source(file, Path(urlsplit(source.url).path).name, label)

    @contextmanager
    def _download(self, source: PackageSource, label: str, cancel: Cancel) -> Iterator[BinaryIO]:
        """An image archive over http(s), whole in an unnamed temporary file (it is read in any order)."""
        expected = integrity.parse_expected(source.digest)
        auth = BasicAuth(source.username, source.password) if source.username or source.password else None
        options = self._fetch_options()
        try:
            file = tempfile.TemporaryFile(dir=self.store.root)  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise disk_fault(exc, f"cannot create a download file in {self.store.root}") from exc
        with file:
            with open_url(source.url, auth, options.http) as reply, cancel.hook(reply.abort):
                total = body_size(reply, self.store.root, options)
                digest = copy_hashed(reply.response, file, total, options, lambda *_: None, cancel, label)
            if expected:
                integrity.verify(digest, expected, label)
            file.seek(0)
            yield file

    def _fetch_options(self) -> FetchOptions:
        return FetchOptions(
            self.config.http(), self.config.max_image_bytes, False, max_signature_bytes=self.config.max_signature_bytes
        )

    def _resolve(self, image: ImageSource) -> tuple[Manifest, str, str]:
        """The image manifest for this device, its hex digest and that of the document the source names."""
        data, announced = image.top()
        hexdigest = top = hashlib.sha256(data).hexdigest()
        if isinstance(image, RegistrySource) and image.ref.digest:
            _verify(hexdigest, image.ref.digest.removeprefix("sha256:"), f"{image.label}: manifest")
        for _ in range(_MAX_NESTING):
            document = load_json(data, "manifest", image.label)
            kind = media_type(document, announced)
            if kind in MANIFEST_TYPES:
                return parse_manifest(document, image.label), hexdigest, top
            if kind not in INDEX_TYPES:
                raise Fault(FaultCode.CORRUPT_DATA, f"{image.label}: unsupported manifest type {kind!r}")
            entry = select(document, self.config.device_platform(), image.label)
            data, announced = image.manifest(entry.hex)
            hexdigest = hashlib.sha256(data).hexdigest()
            _verify(hexdigest, entry.hex, f"{image.label}: manifest {entry.digest}")
        raise Fault(FaultCode.CORRUPT_DATA, f"{image.label}: indexes nested more than {_MAX_NESTING} deep")

    def _install(
        self,
        image: ImageSource,
        manifest: Manifest,
        manifest_hex: str,
        target: Path,
        progress: ProgressCallback,
        cancel: Cancel,
    ) -> BundleInfo:
        label = image.label
        config = load_json(self._small_blob(image, manifest.config, cancel), "image config", label)
        missing = [layer for layer in manifest.layers if not self.store.has(layer.hex)]
        total = sum(layer.size for layer in missing)
        if total > self.config.max_image_bytes:
            raise Fault(
                FaultCode.SYSTEM_RESOURCES_EXCEEDED,
                f"{label}: {total} bytes of layers exceed the limit of {self.config.max_image_bytes} bytes",
            )
        meter = _Meter(progress, total)
        fetched = {layer.hex for layer in missing}
        for index, layer in enumerate(manifest.layers, 1):
            meter.layer = LayerProgress(index, len(manifest.layers), layer.digest, 0, layer.size)
            if layer.hex in fetched and not self.store.has(layer.hex):  # another install may have stored it meanwhile
                self._fetch_layer(image, layer, meter, cancel)
            else:
                meter.skip(layer.hex in fetched)
        log.info("%s: %d of %d layers downloaded (%d bytes)", label, len(missing), len(manifest.layers), meter.done)
        staging = make_staging(target.parent)
        try:
            info = self._assemble(image, manifest, manifest_hex, config, staging, target, cancel)
        except BaseException:
            try:
                remove_tree(staging)
            except Fault as fault:
                log.warning("could not remove %s: %s", staging, fault)
            raise
        share = self.shared_kib(target) or 0
        return dataclasses.replace(info, version=info.version or image.tag, disk_usage_kib=share)

    def _assemble(
        self,
        image: ImageSource,
        manifest: Manifest,
        manifest_hex: str,
        config: dict[str, Any],
        staging: Path,
        target: Path,
        cancel: Cancel,
    ) -> BundleInfo:
        label = image.label
        rootfs = staging / "rootfs"
        try:
            rootfs.mkdir(mode=0o755)
            for layer in manifest.layers:
                apply_layer(str(self.store.path(layer.hex)), str(rootfs), label, cancel)
            spec = self._make_config(config, manifest.annotations, str(rootfs), label)
            (staging / CONFIG).write_text(json.dumps(spec, indent=2))
        except OSError as exc:
            raise disk_fault(exc, f"{label}: cannot assemble the root filesystem") from exc
        layout = Layout(staging, "")
        info = describe(
            layout,
            path=target,
            fallback_name=image.name or "image",
            digest=manifest_hex,
            unpacked_bytes=0,
            symlinks=[],
            label=label,
        )
        claim(layout)
        cancel.check(label)
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise Fault(FaultCode.INTERNAL_ERROR, f"cannot move the bundle to {target}: {exc.strerror}") from exc
        return info

    def _small_blob(self, image: ImageSource, blob: Descriptor, cancel: Cancel) -> bytes:
        where = f"{image.label}: blob {blob.digest}"
        if blob.size > _MAX_CONFIG_BYTES:
            raise Fault(FaultCode.CORRUPT_DATA, f"{where}: {blob.size} bytes is too large for an image config")
        with image.blob(blob.hex) as stream:
            reader = _Verified(stream, blob, None, cancel, where)
            data = bytearray()
            while chunk := reader.read(_CHUNK):
                data += chunk
            reader.finish()
        return bytes(data)

    def _fetch_layer(self, image: ImageSource, layer: Descriptor, meter: _Meter, cancel: Cancel) -> None:
        where = f"{image.label}: layer {layer.digest}"
        limits = ExtractLimits(self.config.max_unpacked_bytes, self.config.max_entries, self.config.allow_special_files)
        staging = self.store.staging()
        try:
            with image.blob(layer.hex) as stream:
                reader = _Verified(stream, layer, meter, cancel, where)
                extracted = extract_archive(reader, staging, limits, where, cancel)
                reader.finish()
            # The bundle rule for symlinks, as seen from a root filesystem at rootfs/.
            links = [(("rootfs", *parts), link) for parts, link in extracted.symlinks]
            _check_symlinks(links, 0, ("rootfs",), where)
            self.store.publish(layer.hex, staging, extracted.unpacked_bytes)
        except BaseException:
            remove_tree(staging)
            raise
        log.info("%s: stored (%d bytes unpacked)", where, extracted.unpacked_bytes)


class _Meter:
    """Bytes of all layers to download so far, and of the current layer, reported to the progress callback."""

    def __init__(self, progress: ProgressCallback, total: int) -> None:
        self._progress = progress
        self.total = total
        self.done = 0
        self.layer: LayerProgress | None = None
        progress(0, total)

    def add(self, count: int) -> None:
        self.done += count
        if self.layer is not None:
            self.layer = dataclasses.replace(self.layer, done=self.layer.done + count)
        self._progress(self.done, self.total, self.layer)

    def skip(self, counted: bool) -> None:
        """The current layer is in the store already (``counted``: it was in the total, stored meanwhile)."""
        assert self.layer is not None
        self.layer = dataclasses.replace(self.layer, done=self.layer.total, stored=True)
        self.done += self.layer.total if counted else 0
        self._progress(self.done, self.total, self.layer)


class _Verified:
    """A blob read forward while its size and sha256 are checked against its descriptor."""

    def __init__(
        self, stream: ArchiveStream, blob: Descriptor, meter: _Meter | None, cancel: Cancel, where: str
    ) -> None:
        self._stream = stream
        self._blob = blob
        self._meter = meter
        self._cancel = cancel
        self._where = where
        self._hash = hashlib.sha256()
        self.count = 0

    def readinto(self, buffer: Any) -> int:
        self._cancel.check(self._where)
        try:
            count = self._stream.readinto(buffer)
        except TimeoutError:
            raise Fault(FaultCode.DOWNLOAD_INCOMPLETE, f"{self._where}: stalled after {self.count} bytes") from None
        except (OSError, http.client.HTTPException) as exc:
            self._cancel.check(self._where)
            raise Fault(
                FaultCode.DOWNLOAD_INCOMPLETE, f"{self._where}: read failed after {self.count} bytes ({exc!r})"
            ) from None
        if count:
            self.count += count
            if self.count > self._blob.size:
                raise Fault(FaultCode.CORRUPT_DATA, f"{self._where}: larger than the {self._blob.size} bytes announced")
            self._hash.update(memoryview(buffer)[:count])
            if self._meter is not None:
                self._meter.add(count)
        return count or 0

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(_CHUNK if size < 0 else size)
        count = self.readinto(buffer)
        return bytes(buffer[:count])

    def finish(self) -> None:
        """Read what is left (extraction may stop before the compressed stream's end) and check it all."""
        scratch = bytearray(_CHUNK)
        while self.readinto(scratch):
            pass
        if self.count != self._blob.size:
            raise Fault(
                FaultCode.CORRUPT_DATA, f"{self._where}: {self.count} bytes, the descriptor says {self._blob.size}"
            )
        _verify(self._hash.hexdigest(), self._blob.hex, self._where)


def _verify(actual: str, expected: str, where: str) -> None:
    if actual != expected:
        raise Fault(FaultCode.CORRUPT_DATA, f"{where}: sha256 is {actual}, expected {expected}")
