"""``dsm-bundle generate``: an OCI image and a platform template → a DU archive for that platform.

The image (any source the image packager reads: ``oci://`` reference, image layout,
docker save archive) is unpacked into a private work directory with the image packager
(the image index resolved to the template's ``arch``); the config starts as umoci's
(:mod:`~dsm_tr181.bundlegen.baseconfig`), the template and app metadata are applied
(:mod:`~dsm_tr181.bundlegen.processor`), and the bundle is written as a flat ``.tar.gz``
(config.json and rootfs/ at the top, as BundleGen makes them) that the tar packager
installs. The app metadata is the file given, else the image's ``/appmetadata.json``
(then removed from the root filesystem, as BundleGen does).

config.json gains annotations: ``org.opencontainers.image.title`` (the app id),
``.version`` and ``.description`` (app metadata, else the image's), ``.vendor`` (the
image's), and :data:`PLATFORM` / :data:`COMPATIBILITY_KEY`, which a device checks at
install time (:mod:`dsm_tr181.packagers.dispatch`). The archive appears only once
complete; any error leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsm_tr181.bundlegen import rootfs as root_files
from dsm_tr181.bundlegen.baseconfig import umoci_config
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.processor import Options, apply
from dsm_tr181.bundlegen.template import Template
from dsm_tr181.errors import Fault
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.dispatch import COMPATIBILITY_KEY, PLATFORM
from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig

_IMAGE = "org.opencontainers.image."
_METADATA = "appmetadata.json"


@dataclass(frozen=True)
class Source:
    url: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    ca_file: Path | None = None
    plain_http: tuple[str, ...] = ()


def generate(
    source: Source,
    template: Template,
    app: dict[str, Any] | None,
    options: Options,
    out: Path,
    *,
    api_version: str,
    release_type: str,
) -> Path:
    """Write the DU archive ``out`` (``.tar.gz``); BundleError on any bad input."""
    arch = template.platform.get("arch") or {}
    platform = "/".join(
        p for p in (str(template.platform.get("os", "linux")), arch.get("arch", ""), arch.get("variant", "")) if p
    )
    captured: dict[str, Any] = {}

    def base(image: dict[str, Any], annotations: dict[str, str], rootfs: str, label: str) -> dict[str, Any]:
        captured["annotations"] = annotations
        return umoci_config(image, rootfs, label)

    with tempfile.TemporaryDirectory(prefix=".dsm-bundle-", dir=out.parent) as work:
        try:
            config = ImagePackagerConfig(platform=platform, ca_file=source.ca_file, plain_http=source.plain_http)
        except ValueError as exc:
            raise BundleError(f"template {template.name}: arch: {exc}") from None
        packager = ImagePackager(config, Path(work) / "layers", make_config=base)
        bundle = Path(work) / "bundle"
        try:
            info = asyncio.run(
                packager.unpack(PackageSource(source.url, source.username, source.password), bundle, lambda *_: None)
            )
        except Fault as fault:
            raise BundleError(f"{source.url}: {fault.message}") from None
        rootfs = str(bundle / "rootfs")
        if app is None:
            app = _metadata_from_image(rootfs, source.url)
        spec = json.loads((bundle / "config.json").read_text())
        apply(spec, template.platform, app, rootfs, options)
        image_notes = captured.get("annotations", {})
        spec["annotations"].update({
            _IMAGE + "title": app["id"],
            _IMAGE + "version": str(app.get("version") or info.version or image_notes.get(_IMAGE + "version", "")),
            _IMAGE + "vendor": image_notes.get(_IMAGE + "vendor", ""),
            _IMAGE + "description": str(app.get("description") or image_notes.get(_IMAGE + "description", "")),
            PLATFORM: template.name,
            COMPATIBILITY_KEY: template.compatibility_key(api_version, release_type),
        })  # fmt: skip
        (bundle / "config.json").write_text(json.dumps(spec, indent=4, ensure_ascii=False))
        root_files.archive_bundle(bundle, out)
    return out


def _metadata_from_image(rootfs: str, url: str) -> dict[str, Any]:
    data = root_files.read_in_root(rootfs, _METADATA, 1 << 20)
    if data is None:
        raise BundleError(f"{url}: no app metadata given and none in the image (/{_METADATA})")
    try:
        app = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{url}: /{_METADATA} is not valid JSON ({exc})") from None
    if not isinstance(app, dict):
        raise BundleError(f"{url}: /{_METADATA} is not a JSON object")
    os.unlink(os.path.join(rootfs, _METADATA))  # read_in_root found it, so it is no symlink of the top directory
    return app
