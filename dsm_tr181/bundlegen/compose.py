"""``dsm-bundle compose``: modules laid into a root filesystem, as OSv composes images.

A module is a directory with an optional ``usr.manifest`` and an optional ``module.json``:

- ``usr.manifest``: ``/guest/path: host/path`` lines (``#`` comments, blank lines and
  ``[manifest]`` skipped). ``${VAR}`` is substituted in the host path (``MODULE_DIR`` is
  the module's directory, more with ``--define``; an undefined one is an error);
  ``/dir/**: ${MODULE_DIR}/src/**`` copies a tree; ``/usr/lib/&/libx.so: ${MODULE_DIR}/lib/&``
  stands for ``/usr/lib/libx.so: ${MODULE_DIR}/lib/libx.so``; a host path ``->target`` makes
  a symlink; ``!path`` copies a symlink as a symlink (otherwise links on the host are
  followed). Host paths must stay inside the module directory (unlike OSv, which reads
  the whole build host: a module cannot pull host files into a DU).
- ``module.json``: ``{"requires": [names], "run": {"name": {"args": [...], "env": [...]}},
  "default_run": "name", "resources": {"ram": "64M"}}``, every member optional.

A modules map (``modules.json``) names the modules: ``{"name": {"type": "direct-dir",
"path": DIR} | {"type": "tar", "path": FILE} | {"type": "git", "url": URL, "branch": B},
"include": [other map files]}``; relative paths are relative to the map file.

``compose a,b.shell,c`` resolves ``requires`` depth first (dependencies before their
users, each once; a cycle or a missing module is an error naming the chain), lays the
modules' files in that order over the optional base image's root filesystem, and takes
``process.args``/``env`` from the chosen run configuration (``b.shell``; else the ``default_run``
of the last module named that has one). The output is a flat DU archive with the
product's minimal config.json (:mod:`dsm_tr181.packagers.imageconfig`) or, with
``--format oci``, an OCI image layout holding the root filesystem as one layer.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsm_tr181.bundlegen import rootfs as root_files
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.ocilayout import CONFIG, LAYER_GZIP, MANIFEST, Layout
from dsm_tr181.bundlegen.processor import parse_size
from dsm_tr181.errors import Fault
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.extract import ExtractLimits, extract_archive
from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig
from dsm_tr181.packagers.imageconfig import runtime_config
from dsm_tr181.packagers.worker import Cancel

_VARIABLE = re.compile(r"\$\{(?P<name>[^}]*)\}")
_COMMENT = re.compile(r"^[ \t]*(|#.*|\[manifest\])$")
_MAX_MAP_DEPTH = 8


@dataclass
class Module:
    name: str
    directory: Path
    requires: list[str] = field(default_factory=list)
    run: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_run: str = ""
    resources: dict[str, Any] = field(default_factory=dict)


# == the modules map ===========================================================================


def load_map(path: Path, _depth: int = 0) -> dict[str, dict[str, Any]]:
    """Module name → its entry (paths made absolute), with every ``include`` merged in."""
    if _depth > _MAX_MAP_DEPTH:
        raise BundleError(f"{path}: includes nested too deep (a loop?)")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"modules map {path}: {exc}") from None
    if not isinstance(document, dict):
        raise BundleError(f"modules map {path}: not a JSON object")
    entries: dict[str, dict[str, Any]] = {}
    for include in document.get("include", []):
        entries.update(load_map(path.parent / os.path.expandvars(include), _depth + 1))
    for name, entry in document.items():
        if name == "include":
            continue
        if not isinstance(entry, dict) or entry.get("type") not in ("direct-dir", "tar", "git"):
            raise BundleError(f"modules map {path}: module {name!r} needs a type of direct-dir, tar or git")
        entry = dict(entry)
        if "path" in entry:
            entry["path"] = str(path.parent / os.path.expandvars(str(entry["path"])))
        entries[name] = entry
    return entries


def _fetch(name: str, entry: dict[str, Any], work: Path) -> Path:
    """The module's directory: in place, or unpacked / cloned into ``work``."""
    kind = entry["type"]
    if kind == "direct-dir":
        directory = Path(entry.get("path", ""))
        if not directory.is_dir():
            raise BundleError(f"module {name}: {directory} is not a directory")
        return directory
    target = work / "modules" / name
    target.mkdir(parents=True)
    if kind == "tar":
        try:
            with open(entry.get("path", ""), "rb") as archive:
                extract_archive(archive, target, ExtractLimits(1 << 30, 100_000, False), f"module {name}", Cancel())
        except (OSError, Fault) as exc:
            raise BundleError(f"module {name}: {getattr(exc, 'message', exc)}") from None
        return target
    branch = ["--branch", str(entry["branch"])] if entry.get("branch") else []
    done = subprocess.run(["git", "clone", "--quiet", "--depth", "1", *branch, str(entry.get("url", "")), str(target)],
                          capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    if done.returncode:
        raise BundleError(f"module {name}: git clone failed: {done.stderr.strip()[-500:]}")
    return target


def _read_module(name: str, directory: Path) -> Module:
    module = Module(name, directory)
    path = directory / "module.json"
    if not path.exists():
        return module
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"module {name}: module.json: {exc}") from None
    requires, run = data.get("requires", []), data.get("run", {})
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise BundleError(f"module {name}: requires must be a list of module names")
    if not isinstance(run, dict) or not all(
        isinstance(c, dict) and isinstance(c.get("args"), list) for c in run.values()
    ):
        raise BundleError(f"module {name}: each run configuration needs an args list")
    module.requires, module.run = requires, run
    module.default_run = str(data.get("default_run", "default" if "default" in run else ""))
    module.resources = dict(data.get("resources", {}))
    return module


def resolve(names: list[str], modules_map: dict[str, dict[str, Any]], work: Path) -> list[Module]:
    """The modules ``names`` need, dependencies first, each once; BundleError on a cycle or a missing one."""
    order: list[Module] = []
    done: dict[str, Module] = {}

    def visit(name: str, chain: list[str]) -> None:
        if name in chain:
            raise BundleError(f"dependency cycle: {' -> '.join([*chain[chain.index(name) :], name])}")
        if name in done:
            return
        if name not in modules_map:
            via = f" (required by {chain[-1]})" if chain else ""
            raise BundleError(f"no module named {name!r} in the modules map{via}")
        module = _read_module(name, _fetch(name, modules_map[name], work))
        for needed in module.requires:
            visit(needed, [*chain, name])
        done[name] = module
        order.append(module)

    for name in names:
        visit(name, [])
    return order


# == manifests ====================================================================================


def manifest_entries(module: Module, variables: dict[str, str]) -> list[tuple[str, str]]:
    """(guest path, host path or ->target) pairs of the module's usr.manifest, expanded."""
    path = module.directory / "usr.manifest"
    if not path.exists():
        return []
    values = {**variables, "MODULE_DIR": str(module.directory)}

    def substitute(match: re.Match[str]) -> str:
        if match["name"] not in values:
            raise BundleError(f"module {module.name}: usr.manifest: undefined variable ${{{match['name']}}}")
        return values[match["name"]]

    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if _COMMENT.match(line.rstrip()):
            continue
        guest, sep, host = line.partition(": ")
        if not sep or not guest.strip().startswith("/"):
            raise BundleError(f"module {module.name}: usr.manifest line {number}: expected '/guest/path: host/path'")
        pairs += _expand(guest.strip(), _VARIABLE.sub(substitute, host.strip()), module)
    return pairs


def _expand(guest: str, host: str, module: Module) -> list[tuple[str, str]]:
    if guest.endswith("/**") and host.endswith("/**"):
        base, guest_base = _inside(host[:-3], module), guest[:-2]
        return [
            (guest_base + os.path.relpath(os.path.join(directory, name), base), os.path.join(directory, name))
            for directory, _, files in sorted(os.walk(base)) for name in sorted(files)
        ]  # fmt: skip
    if "/&/" in guest and host.endswith("/&"):
        prefix, suffix = guest.split("/&/", 1)
        guest, host = f"{prefix}/{suffix}", host[:-1] + suffix
    if host.startswith("->"):
        return [(guest, host)]
    return [(guest, ("!" if host.startswith("!") else "") + _inside(host.removeprefix("!"), module))]


def _inside(host: str, module: Module) -> str:
    """``host`` made absolute (relative to the module) and refused outside the module directory."""
    full = os.path.normpath(os.path.join(module.directory, host))
    root = os.path.realpath(module.directory)
    if (
        os.path.commonpath([os.path.realpath(full if not os.path.islink(full) else os.path.dirname(full)), root])
        != root
    ):
        raise BundleError(f"module {module.name}: usr.manifest: {host} is outside the module directory")
    return full


def lay_out(modules: list[Module], rootfs: str, variables: dict[str, str]) -> None:
    for module in modules:
        for guest, host in manifest_entries(module, variables):
            if host.startswith("->"):
                root_files.symlink_in(rootfs, guest, host[2:])
            elif host.startswith("!") and os.path.islink(host[1:]):
                root_files.symlink_in(rootfs, guest, os.readlink(host[1:]))
            else:
                source = host.removeprefix("!")
                if not os.path.isfile(source):
                    raise BundleError(f"module {module.name}: usr.manifest: {source} is not a file")
                real = os.path.realpath(source)
                if os.path.commonpath([real, os.path.realpath(module.directory)]) != os.path.realpath(module.directory):
                    raise BundleError(f"module {module.name}: {source} links outside the module directory")
                root_files.copy_in(rootfs, guest, real, os.stat(real).st_mode)


# == compose ======================================================================================


@dataclass(frozen=True)
class Request:
    modules: list[str]  # as given: "name" or "name.runconfig"
    modules_map: Path
    output: Path
    base: str = ""  # an image source, or "" for an empty root filesystem
    name: str = ""
    version: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    oci: bool = False


def _chosen_run(request: Request, modules: dict[str, Module]) -> dict[str, Any]:
    explicit = [item for item in request.modules if "." in item]
    if len(explicit) > 1:
        raise BundleError(f"more than one run configuration chosen: {', '.join(explicit)}")
    if explicit:
        name, _, run = explicit[0].partition(".")
        if run not in modules[name].run:
            known = ", ".join(sorted(modules[name].run)) or "none"
            raise BundleError(f"module {name} has no run configuration {run!r} (it has: {known})")
        return modules[name].run[run]
    for item in reversed(request.modules):
        module = modules[item]
        if module.default_run in module.run:
            return module.run[module.default_run]
    raise BundleError("no run configuration: choose one as module.name, or give a module a default_run")


def compose(request: Request) -> Path:
    names = [item.partition(".")[0] for item in request.modules]
    if not names or not all(names):
        raise BundleError("no modules given")
    modules_map = load_map(request.modules_map)
    with tempfile.TemporaryDirectory(prefix=".dsm-compose-", dir=request.output.parent) as work_dir:
        work = Path(work_dir)
        order = resolve(names, modules_map, work)
        run = _chosen_run(request, {m.name: m for m in order})
        bundle = work / "bundle"
        rootfs = bundle / "rootfs"
        image: dict[str, Any] = {}
        if request.base:
            image = _unpack_base(request.base, bundle, work)
        else:
            rootfs.mkdir(parents=True, mode=0o755)
        lay_out(order, str(rootfs), request.variables)
        image.setdefault("config", {})
        image["config"] |= {"Entrypoint": None, "Cmd": [str(a) for a in run["args"]]}
        image["config"]["Env"] = list(image["config"].get("Env") or []) + list(run.get("env") or [])
        notes = {"org.opencontainers.image.title": request.name or order[-1].name,
                 "org.opencontainers.image.version": request.version}  # fmt: skip
        if request.oci:
            _write_layout(image, rootfs, notes, work, request.output)
            return request.output
        spec = runtime_config(image, notes, str(rootfs), "compose")
        ram = next((m.resources["ram"] for m in reversed(order) if "ram" in m.resources), None)
        if ram:
            spec["linux"]["resources"] = {"memory": {"limit": parse_size(ram)}}
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        root_files.archive_bundle(bundle, request.output)
    return request.output


def _unpack_base(base: str, bundle: Path, work: Path) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def keep(image: dict[str, Any], notes: dict[str, str], rootfs: str, label: str) -> dict[str, Any]:
        captured.update(image)
        return {"ociVersion": "1.0.2", "process": {"args": ["/"]}, "root": {"path": "rootfs"}}

    packager = ImagePackager(ImagePackagerConfig(), work / "layers", make_config=keep)
    try:
        asyncio.run(packager.unpack(PackageSource(base), bundle, lambda *_: None))
    except Fault as fault:
        raise BundleError(f"base image {base}: {fault.message}") from None
    (bundle / "config.json").unlink()
    return captured


def _write_layout(image: dict[str, Any], rootfs: Path, notes: dict[str, str], work: Path, out: Path) -> None:
    """An OCI image layout (tag ``latest``) with the root filesystem as one gzip layer."""
    if out.exists():
        raise BundleError(f"{out} already exists")
    staging = work / "layout"
    layout = Layout(staging)
    layer = work / "layer.tar.gz"
    with tarfile.open(layer, "w:gz") as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name)
    layer_descriptor = layout.blob(layer.read_bytes(), LAYER_GZIP)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer.read_bytes())).hexdigest()
    config = {"architecture": image.get("architecture", "amd64"), "os": "linux", "config": image["config"],
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}  # fmt: skip
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": layout.blob(json.dumps(config).encode(), CONFIG),
                "layers": [layer_descriptor], "annotations": {k: v for k, v in notes.items() if v}}  # fmt: skip
    layout.tag(layout.blob(json.dumps(manifest).encode(), MANIFEST), "latest")
    shutil.move(staging, out)
