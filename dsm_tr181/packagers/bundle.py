"""What makes an unpacked archive an OCI bundle, and what the bundle says about itself.

Layouts (both seen in the field): ``config.json`` and ``rootfs/`` at the top of the
archive (flat, as BundleGen makes them), or inside one top folder ``NAME/`` and
nothing else beside it (the original DSM's layout).

config.json must be a JSON object with ``ociVersion`` (a string: "1.0.2", and
Dobby's "1.0.2-dobby" with its ``rdkPlugins`` object, are both fine),
``process.args`` (a non-empty list of strings) and ``root.path`` (a relative path,
without ``..``, to a real directory of the bundle: the root filesystem).
``annotations``, if present, maps strings to strings. config.json and manifest.json
are read without following symlinks, and no component of root.path may be one.
They and the bundle directory end up owned by the daemon (see :func:`claim`).

Optional ``manifest.json`` beside config.json: a JSON object whose string members
``name``, ``version``, ``vendor`` and ``description`` (all optional; other members
are ignored) fill what the annotations ``org.opencontainers.image.title``,
``.version``, ``.vendor`` and ``.description`` leave empty: annotations win. The
name falls back to the top folder's name, then to the archive's file name without
its extensions.

Symlink rule. Extraction never writes through a symlink and hardlinks only join
files of the archive (see :mod:`dsm_tr181.packagers.extract`), so links cannot
make the unpacking itself reach outside the staging directory. What remains is
what a link means to whoever later opens it:
- a relative target is resolved lexically from the link's directory and must stay
  inside the bundle (``rootfs/bin/sh -> busybox`` is fine,
  ``rootfs/x -> ../../../etc/passwd`` is not);
- an absolute target is only meaningful inside the container, where the runtime
  resolves it against the root filesystem (``/bin/sh -> /bin/busybox``); such
  links are allowed inside root.path and refused elsewhere in the bundle.
Host code must therefore never follow symlinks inside a bundle's root filesystem;
runtimes resolve them inside the container's root.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo
from dsm_tr181.packagers import integrity

CONFIG = "config.json"
MANIFEST = "manifest.json"
_MAX_JSON_BYTES = 4 << 20
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tgz", ".txz", ".tar")
_IMAGE = "org.opencontainers.image."


@dataclass(frozen=True)
class Layout:
    directory: Path  # the bundle inside the staging directory
    top_folder: str  # "" for a flat archive


def locate(staging: Path, label: str) -> Layout:
    """Find the bundle in an unpacked archive: flat, or one top folder."""
    if os.path.lexists(staging / CONFIG):
        return Layout(staging, "")
    children = os.listdir(staging)
    if len(children) == 1:
        folder = staging / children[0]
        if stat.S_ISDIR(os.lstat(folder).st_mode) and os.path.lexists(folder / CONFIG):
            return Layout(folder, children[0])
    raise Fault(
        FaultCode.CORRUPT_DATA,
        f"{label}: no {CONFIG}: expected {CONFIG} and rootfs/ at the top, or inside one top folder",
    )


def name_from_archive(file_name: str) -> str:
    """``hello-1.0.tar.gz`` → ``hello-1.0``."""
    for suffix in _ARCHIVE_SUFFIXES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return file_name


def describe(
    layout: Layout,
    *,
    path: Path,
    fallback_name: str,
    digest: str,
    unpacked_bytes: int,
    symlinks: list[tuple[tuple[str, ...], str]],
    label: str,
) -> BundleInfo:
    """Validate the bundle in ``layout`` and tell what it is; ``path`` is where it will live."""
    config = _read_json_object(layout.directory, CONFIG, label)
    if config is None:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: {CONFIG} is missing")
    annotations = _check_config(config, label)
    root = _root_components(config, label)
    _check_root_directory(layout.directory, root, label)
    _check_symlinks(symlinks, 1 if layout.top_folder else 0, root, label)
    manifest = _read_manifest(layout.directory, label)

    def pick(annotation: str, manifest_key: str) -> str:
        return annotations.get(_IMAGE + annotation) or manifest.get(manifest_key, "")

    return BundleInfo(
        path=path,
        name=pick("title", "name") or layout.top_folder or fallback_name,
        version=pick("version", "version"),
        vendor=pick("vendor", "vendor"),
        description=pick("description", "description"),
        digest=integrity.PREFIX + digest,
        disk_usage_kib=-(-unpacked_bytes // 1024),
        annotations=annotations,
    )


def claim(layout: Layout) -> None:
    """Make the bundle directory, config.json and manifest.json the daemon's, writable by it alone.

    Whoever may edit config.json controls the container, so these never keep an
    owner or group/other write bits from the archive (the root filesystem does).
    """
    for path in (layout.directory, layout.directory / CONFIG, layout.directory / MANIFEST):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
        os.chmod(path, stat.S_IMODE(mode) & ~0o022)


def _corrupt(label: str, message: str) -> Fault:
    return Fault(FaultCode.CORRUPT_DATA, f"{label}: {message}")


def _read_json_object(directory: Path, name: str, label: str) -> dict[str, Any] | None:
    """A JSON object file of the bundle, read without following symlinks; None if absent."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = "is a symlink" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise _corrupt(label, f"{name} {reason}") from None
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _corrupt(label, f"{name} is not a regular file")
        if info.st_size > _MAX_JSON_BYTES:
            raise _corrupt(label, f"{name} is larger than {_MAX_JSON_BYTES} bytes")
        data = file.read()
    try:
        value = json.loads(data)
        # Lone surrogates ("\\ud800") decode to text that can be neither stored nor sent.
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeError, ValueError) as exc:
        raise _corrupt(label, f"{name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise _corrupt(label, f"{name} is nested too deeply") from None
    if not isinstance(value, dict):
        raise _corrupt(label, f"{name} is not a JSON object")
    return value


def _check_config(config: dict[str, Any], label: str) -> dict[str, str]:
    """Check the members this product relies on; return the annotations."""
    version = config.get("ociVersion")
    if not isinstance(version, str) or not version:
        raise _corrupt(label, f"{CONFIG}: ociVersion must be a non-empty string")
    process = config.get("process")
    args = process.get("args") if isinstance(process, dict) else None
    if not isinstance(args, list) or not args or not all(isinstance(arg, str) for arg in args):
        raise _corrupt(label, f"{CONFIG}: process.args must be a non-empty list of strings")
    plugins = config.get("rdkPlugins", {})
    if not isinstance(plugins, dict):
        raise _corrupt(label, f"{CONFIG}: rdkPlugins must be an object")
    annotations = config.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise _corrupt(label, f"{CONFIG}: annotations must map strings to strings")
    return dict(annotations)


def _root_components(config: dict[str, Any], label: str) -> tuple[str, ...]:
    root = config.get("root")
    root_path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(root_path, str) or not root_path:
        raise _corrupt(label, f"{CONFIG}: root.path must be a non-empty string")
    if root_path.startswith("/"):
        raise _corrupt(label, f"{CONFIG}: root.path {root_path!r} must be relative to the bundle")
    parts = tuple(part for part in root_path.split("/") if part not in ("", "."))
    if not parts or ".." in parts:
        raise _corrupt(label, f"{CONFIG}: root.path {root_path!r} must name a directory inside the bundle")
    return parts


def _check_root_directory(bundle: Path, root: tuple[str, ...], label: str) -> None:
    current = bundle
    for part in root:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise _corrupt(label, f"{CONFIG}: root.path {'/'.join(root)!r} does not exist in the bundle") from None
        if not stat.S_ISDIR(mode):
            raise _corrupt(label, f"{CONFIG}: root.path {'/'.join(root)!r} is not a directory (or passes a symlink)")


def _check_symlinks(symlinks: list[tuple[tuple[str, ...], str]], skip: int, root: tuple[str, ...], label: str) -> None:
    """Apply the symlink rule of the module docstring; ``skip`` drops the top folder."""
    for parts, target in symlinks:
        link = parts[skip:]
        shown = "/".join(parts)
        if target.startswith("/"):
            if len(link) <= len(root) or link[: len(root)] != root:
                raise _corrupt(label, f"member {shown!r}: absolute symlink to {target!r} outside the root filesystem")
            continue
        resolved = list(link[:-1])
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part != "..":
                resolved.append(part)
            elif resolved:
                resolved.pop()
            else:
                raise _corrupt(label, f"member {shown!r}: symlink to {target!r} leaves the bundle")


def _read_manifest(directory: Path, label: str) -> dict[str, str]:
    manifest = _read_json_object(directory, MANIFEST, label) or {}
    fields = {key: manifest[key] for key in ("name", "version", "vendor", "description") if key in manifest}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise _corrupt(label, f"{MANIFEST}: {key} must be a string")
    return fields
