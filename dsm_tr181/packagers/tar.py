"""The ``tar`` packager: DU archives (.tar, .tar.gz, .tar.xz) holding one OCI bundle.

``unpack`` fetches the archive (:mod:`~dsm_tr181.packagers.fetch`), checks its
digest, extracts it safely into ``<target parent>/.staging-<random>``
(:mod:`~dsm_tr181.packagers.extract`), validates the bundle
(:mod:`~dsm_tr181.packagers.bundle`) and renames it to ``target`` only then. With
no digest expected, a remote archive is extracted while it downloads
(:mod:`~dsm_tr181.packagers.pipeline`); the rename still waits for the whole
archive. Any failure, cancellation included, removes the staging directory;
downloads live in unnamed temporary files or a pipe. The blocking work runs in
worker threads, so the progress callback is called from one of them.

Configuration (section ``[packager.tar]`` or however the daemon names it), every
key optional:

=====================  =========  ============================================
key                    default    meaning
=====================  =========  ============================================
max_archive_bytes      512 MiB    largest archive accepted (checked while streaming)
max_unpacked_bytes     1 GiB      largest sum of unpacked file sizes
max_entries            100000     most archive members
allow_special_files    false      accept device nodes and FIFOs
ca_file                (none)     PEM CA file for https, replacing the system store
verify_tls             true       verify https certificates and host names
connect_timeout        15         seconds for TCP connect + TLS handshake
read_timeout           60         seconds any later wait for data may take
min_rate               1024       bytes/s a download must average over each ``rate_window`` (0: no minimum)
rate_window            60         seconds over which ``min_rate`` is measured
max_redirects          5          HTTP redirects followed
download_dir           (none)     where downloads await their digest check; default the target's parent
sibling_digest         true       look for ``<url>.sha256`` when no digest is given
max_signature_bytes    65536      largest signature fetched from a ``Signature`` URL
=====================  =========  ============================================

A ``Signature`` (:mod:`~dsm_tr181.packagers.signature`) is fetched and parsed first; the
archive is then hashed once as it arrives and the signature verified against that digest
and the ExecEnv's signers before extraction starts (never unpacked while downloading).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource, ProgressCallback
from dsm_tr181.packagers import signature
from dsm_tr181.packagers.bundle import Layout, claim, describe, locate, name_from_archive
from dsm_tr181.packagers.extract import ExtractLimits, extract_archive
from dsm_tr181.packagers.fetch import Fetched, FetchOptions, fetch
from dsm_tr181.packagers.httpget import HttpOptions
from dsm_tr181.packagers.worker import Cancel, disk_fault, make_staging, remove_tree, unpack_in_thread
from dsm_tr181.sections import Invalid, build_section

log = logging.getLogger(__name__)

_MIB = 1 << 20


@dataclass(frozen=True)
class TarPackagerConfig:
    max_archive_bytes: int = 512 * _MIB
    max_unpacked_bytes: int = 1024 * _MIB
    max_entries: int = 100_000
    allow_special_files: bool = False
    ca_file: Path | None = None
    verify_tls: bool = True
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    min_rate: int = 1024
    rate_window: float = 60.0
    max_redirects: int = 5
    download_dir: Path | None = None
    sibling_digest: bool = True
    max_signature_bytes: int = 65536

    def __post_init__(self) -> None:
        positive = (
            "max_archive_bytes",
            "max_signature_bytes",
            "max_unpacked_bytes",
            "max_entries",
            "connect_timeout",
            "read_timeout",
        )
        for name in (*positive, "rate_window"):
            if getattr(self, name) <= 0:
                raise Invalid(name, "must be positive")
        for name in ("max_redirects", "min_rate"):
            if getattr(self, name) < 0:
                raise Invalid(name, "must not be negative")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TarPackagerConfig:
        """Build from the configuration section; ValueError on unknown keys, wrong types or values."""
        return build_section(cls, section, "packager.tar")

    def fetch_options(self) -> FetchOptions:
        http = HttpOptions(self.ca_file, self.verify_tls, self.connect_timeout, self.read_timeout, self.max_redirects)
        return FetchOptions(
            http,
            self.max_archive_bytes,
            self.sibling_digest,
            max_signature_bytes=self.max_signature_bytes,
            min_rate=self.min_rate,
            rate_window=self.rate_window,
        )

    def extract_limits(self) -> ExtractLimits:
        return ExtractLimits(self.max_unpacked_bytes, self.max_entries, self.allow_special_files)


class TarPackager:
    """Packager for tar archives of OCI bundles (see the module docstring)."""

    def __init__(self, config: TarPackagerConfig | None = None) -> None:
        self.config = config or TarPackagerConfig()

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TarPackager:
        return cls(TarPackagerConfig.from_config(section))

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> TarPackager:
        """The adapter factory (dsm_tr181/adapters.py); it keeps no state of its own."""
        return cls.from_config(section)

    def __repr__(self) -> str:
        return f"TarPackager({self.config!r})"

    async def unpack(self, source: PackageSource, target: Path, progress: ProgressCallback) -> BundleInfo:
        return await unpack_in_thread(lambda cancel: self._unpack(source, target, progress, cancel), self.remove)

    async def remove(self, bundle: Path) -> None:
        await asyncio.to_thread(remove_tree, bundle)

    def _unpack(self, source: PackageSource, target: Path, progress: ProgressCallback, cancel: Cancel) -> BundleInfo:
        _check_target(target)
        download_dir = self.config.download_dir or target.parent
        options = self.config.fetch_options()
        pending = signature.load(source, options)
        with fetch(
            source, options, progress, cancel, download_dir=download_dir, unpack_dir=target.parent, signature=pending
        ) as fetched:
            staging = make_staging(target.parent)
            try:
                info = self._install(fetched, staging, target, cancel)
            except BaseException:
                _discard(staging)
                raise
        return info

    def _install(self, fetched: Fetched, staging: Path, target: Path, cancel: Cancel) -> BundleInfo:
        """Unpack the archive into ``staging``, check the bundle, move it to ``target``."""
        try:
            extracted = extract_archive(fetched.file, staging, self.config.extract_limits(), fetched.label, cancel)
            digest = fetched.complete()  # the whole archive is in and hashed before anything is published
            layout = locate(staging, fetched.label)
            info = describe(
                layout,
                path=target,
                fallback_name=name_from_archive(fetched.name) or "bundle",
                digest=digest,
                unpacked_bytes=extracted.unpacked_bytes,
                symlinks=extracted.symlinks,
                label=fetched.label,
            )
            info = replace(info, signed_by=fetched.signed_by)
            claim(layout)
            cancel.check(fetched.label)
            _publish(layout, staging, target)
        except OSError as exc:
            raise disk_fault(exc, f"{fetched.label}: cannot unpack") from exc
        except Fault:
            raise
        except Exception as exc:  # whatever else the archive's content provokes: it is the archive's fault
            log.warning("%s: unpacking failed", fetched.label, exc_info=True)
            raise Fault(FaultCode.CORRUPT_DATA, f"{fetched.label}: cannot unpack ({type(exc).__name__})") from exc
        log.info("%s: unpacked into %s (%d members)", fetched.label, target, extracted.entries)
        return info


def _check_target(target: Path) -> None:
    if os.path.lexists(target):
        raise Fault(FaultCode.INTERNAL_ERROR, f"cannot unpack into {target}: it already exists")
    if not target.parent.is_dir():
        raise Fault(FaultCode.INTERNAL_ERROR, f"cannot unpack into {target}: {target.parent} is not a directory")


def _discard(staging: Path) -> None:
    """Best-effort removal after a failure, which must not hide the failure itself."""
    try:
        remove_tree(staging)
    except Fault as fault:
        log.warning("could not remove %s: %s", staging, fault)


def _publish(layout: Layout, staging: Path, target: Path) -> None:
    """Move the finished bundle to ``target`` in one rename (rename would replace an empty directory)."""
    _check_target(target)
    try:
        os.rename(layout.directory, target)
        if layout.top_folder:
            os.rmdir(staging)
    except OSError as exc:
        raise Fault(FaultCode.INTERNAL_ERROR, f"cannot move the bundle to {target}: {exc.strerror}") from exc
