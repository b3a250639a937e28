"""RDK platform templates: ``{platform}.json`` + ``{platform}_libs.json``, or the firmware's
``{platform}_{compatibilityKey}_dac_configs.tgz`` holding them.

The compatibility key of a template is ``<apiVersion>-<sha1 of the platform JSON bytes
followed by the _libs JSON bytes>-<releaseType>``: the bytes as stored, so any edit of
either file makes another key. The two documents are merged as BundleGen merges them
(the libs file contributes its ``libs`` list).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.bundlegen.errors import BundleError

_REQUIRED = ("platformName", "os", "arch", "rdk", "hardware", "network")
_OBJECTS = ("arch", "rdk", "hardware", "network", "storage", "gpu", "dobby", "logging", "usersAndGroups", "root")
_LISTS = ("mounts", "envvar", "resourceLimits", "capabilities")
_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class Template:
    name: str
    platform: dict[str, Any]  # the merged configuration BundleGen works from
    platform_bytes: bytes
    libs_bytes: bytes

    def compatibility_key(self, api_version: str, release_type: str) -> str:
        digest = hashlib.sha1(self.platform_bytes + self.libs_bytes, usedforsecurity=False).hexdigest()
        return f"{api_version}-{digest}-{release_type}"


def load_template(source: Path, name: str) -> Template:
    """The template ``name`` from a directory (searched recursively) or a ``_dac_configs.tgz``."""
    if source.is_dir():
        platform = _find_file(source, f"{name}.json")
        libs = _find_file(source, f"{name}_libs.json")
        return _build(name, platform.read_bytes(), libs.read_bytes() if libs else None, str(source))
    if source.name.endswith(("_dac_configs.tgz", ".tgz", ".tar.gz")):
        return _from_archive(source, name)
    raise BundleError(f"{source}: not a template directory nor a _dac_configs.tgz")


def _find_file(directory: Path, file_name: str) -> Path | None:
    found = sorted(path for path in directory.rglob(file_name) if path.is_file())
    if len(found) > 1:
        raise BundleError(f"{directory}: {file_name} found more than once ({', '.join(map(str, found))})")
    if not found and not file_name.endswith("_libs.json"):
        raise BundleError(f"{directory}: no platform template {file_name}")
    return found[0] if found else None


def _from_archive(archive: Path, name: str) -> Template:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rpartition("/")[2]
                if member.isreg() and base in (f"{name}.json", f"{name}_libs.json"):
                    if member.size > _MAX_BYTES:
                        raise BundleError(f"{archive}: {member.name} is too large")
                    file = tar.extractfile(member)
                    assert file is not None
                    members[base] = file.read()
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{archive}: cannot read the template archive ({exc})") from None
    if f"{name}.json" not in members:
        raise BundleError(f"{archive}: holds no {name}.json")
    return _build(name, members[f"{name}.json"], members.get(f"{name}_libs.json"), str(archive))


def _build(name: str, platform_bytes: bytes, libs_bytes: bytes | None, where: str) -> Template:
    if libs_bytes is None:
        raise BundleError(f"{where}: the libs file {name}_libs.json is missing")
    platform = _object(platform_bytes, f"{name}.json", where)
    libs = _object(libs_bytes, f"{name}_libs.json", where)
    _check_platform(platform, f"{where}: {name}.json")
    _check_libs(libs, f"{where}: {name}_libs.json")
    return Template(name, {**platform, **libs}, platform_bytes, libs_bytes)


def _object(data: bytes, file_name: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: {file_name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BundleError(f"{where}: {file_name} is not a JSON object")
    return value


def _check_platform(platform: dict[str, Any], where: str) -> None:
    missing = [key for key in _REQUIRED if key not in platform]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)} (required by the platform schema)")
    for key in _OBJECTS:
        if key in platform and not isinstance(platform[key], dict):
            raise BundleError(f"{where}: {key} must be an object")
    for key in _LISTS:
        if key in platform and not isinstance(platform[key], list):
            raise BundleError(f"{where}: {key} must be a list")
    if not isinstance(platform["network"].get("options", []), list):
        raise BundleError(f"{where}: network.options must be a list")
    for dev in platform.get("gpu", {}).get("devs", []):
        if not isinstance(dev, dict) or not {"path", "type", "major", "minor", "access"} <= set(dev):
            raise BundleError(f"{where}: gpu.devs entries need path, type, major, minor and access")


def _check_libs(libs: dict[str, Any], where: str) -> None:
    entries = libs.get("libs")
    if not isinstance(entries, list):
        raise BundleError(f"{where}: libs must be a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BundleError(f"{where}: each lib needs a name")
        if not isinstance(entry.get("apiversions"), list) or not isinstance(entry.get("deps"), list):
            raise BundleError(f"{where}: lib {entry['name']} needs apiversions and deps lists")
