"""The daemon's packager: the ``image`` packager for images, the ``tar`` packager for DU archives.

An image is an ``oci://`` reference, a directory holding ``oci-layout``, or an
uncompressed tar with ``oci-layout`` or a ``docker save`` ``manifest.json`` at its
top (and no ``config.json``, which makes a flat DU bundle). Of an http(s) archive only
the start is looked at, with one extra GET read no further than its first 8 KiB
(:func:`~dsm_tr181.packagers.imagesources.looks_like_image_tar`). Everything else goes
to the tar packager, which also reports what was wrong with an unreadable source. Removal goes through the image
packager, which also drops the bundle's layer references (a no-op for tar bundles).

A bundle made for a platform (``dsm-bundle generate`` annotates :data:`PLATFORM` and
:data:`COMPATIBILITY_KEY`) installs only on a device configured with that platform name
and key (``[packager.image]`` ``platform_name`` and ``compatibility_key``); otherwise it
is removed again and the install fails with DU_EE_MISMATCH naming both. Bundles without
those annotations, and devices without a platform name, are not checked.
"""

from __future__ import annotations

import asyncio
import http.client as http_client
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource, ProgressCallback
from dsm_tr181.packagers.fetch import local_path
from dsm_tr181.packagers.httpget import BasicAuth, HttpOptions, open_url
from dsm_tr181.packagers.image import ImagePackager
from dsm_tr181.packagers.imageref import is_image_ref
from dsm_tr181.packagers.imagesources import OCI_LAYOUT, PEEK_BYTES, archive_kind, looks_like_image_tar, tar_top_names
from dsm_tr181.packagers.tar import TarPackager
from dsm_tr181.sections import check_known

PLATFORM = "com.rdkcentral.dac.platform"
COMPATIBILITY_KEY = "com.rdkcentral.dac.compatibilityKey"


class AutoPackager:
    def __init__(self, tar: TarPackager, image: ImagePackager) -> None:
        self.tar = tar
        self.image = image

    @classmethod
    def create(cls, tar_section: Mapping[str, Any], image_section: Mapping[str, Any], bundle_dir: Path) -> AutoPackager:
        """Both packagers from their sections; the layer store defaults to ``layers`` beside ``bundle_dir``."""
        return cls(
            TarPackager.from_config(tar_section), ImagePackager.from_config(image_section, bundle_dir.parent / "layers")
        )

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> AutoPackager:
        """The adapter factory (dsm_tr181/adapters.py): ``section`` holds the ``tar`` and ``image``
        sections, ``context.state_dir`` is the bundle directory."""
        check_known("packager", section, ["tar", "image"])
        return cls.create(section.get("tar", {}), section.get("image", {}), context.state_dir)

    def __repr__(self) -> str:
        return f"AutoPackager({self.tar!r}, {self.image!r})"

    async def unpack(self, source: PackageSource, target: Path, progress: ProgressCallback) -> BundleInfo:
        image = await asyncio.to_thread(is_image_source, source, self.image.config.http())
        chosen = self.image if image else self.tar
        info = await chosen.unpack(source, target, progress)
        mismatch = self._mismatch(info.annotations)
        if mismatch:
            await self.remove(info.path)
            raise Fault(FaultCode.DU_EE_MISMATCH, f"{source.url}: {mismatch}")
        return info

    def _mismatch(self, annotations: Mapping[str, str]) -> str:
        """Why a bundle made for a platform does not fit this device; "" when it does (or nobody says)."""
        device = (self.image.config.platform_name, self.image.config.compatibility_key)
        made_for = (annotations.get(PLATFORM, ""), annotations.get(COMPATIBILITY_KEY, ""))
        if not device[0] or not any(made_for) or made_for == device:
            return ""
        return (
            f"generated for platform {made_for[0] or '(none)'} with compatibility key {made_for[1] or '(none)'}; "
            f"this device is platform {device[0]} with key {device[1] or '(none)'}"
        )

    async def remove(self, bundle: Path) -> None:
        await self.image.remove(bundle)

    def shared_kib(self, bundle: Path) -> int | None:
        return self.image.shared_kib(bundle)


def is_image_source(source: PackageSource, http: HttpOptions) -> bool:
    """Whether ``source`` names an image (see the module docstring)."""
    url = source.url
    if is_image_ref(url):
        return True
    try:
        path = local_path(url, url)
    except Fault:
        return False
    if path is None:
        return _remote_image(source, http)
    try:
        if path.is_dir():
            return os.path.isfile(path / OCI_LAYOUT)
        with open(path, "rb") as file:
            return archive_kind(tar_top_names(file)) != ""
    except OSError:
        return False


def _remote_image(source: PackageSource, http: HttpOptions) -> bool:
    auth = BasicAuth(source.username, source.password) if source.username or source.password else None
    try:
        with open_url(source.url, auth, http) as reply:
            if reply.response.status != 200:
                return False
            start = b""
            while len(start) < PEEK_BYTES and (more := reply.response.read(PEEK_BYTES - len(start))):
                start += more
    except (Fault, OSError, http_client.HTTPException):
        return False
    return looks_like_image_tar(start)
