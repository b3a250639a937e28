"""Unpacked image layers, stored once by blob digest and shared by the bundles made from them.

Layout of the store directory::

    layers/<hex>/          the layer's files, extracted safely (whiteout markers kept)
    layers/<hex>.json      {"bytes": unpacked size}
    refs/<sha1 of bundle path>.json   {"bundle": path, "layers": [hex, ...]}

A bundle's root filesystem is assembled from hard links to these files
(:mod:`~dsm_tr181.packagers.layers`), so layers common to several DUs take disk
once; its config.json makes the root read-only, so a container cannot write
through a link into another DU's files. A bundle's references are written before
its layers are fetched and dropped when it is removed; :meth:`LayerStore.collect`
then deletes every layer no reference names. References of a bundle that does not
exist and is not being installed (a crash) count for nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TypedDict, cast

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.packagers.worker import disk_fault, make_staging, remove_tree

log = logging.getLogger(__name__)


class _LayerFile(TypedDict, total=False):
    """layers/<hex>.json (this module writes it; a missing or unreadable file reads as {})."""

    bytes: int


class _RefFile(TypedDict, total=False):
    """refs/<sha1 of bundle path>.json."""

    bundle: str
    layers: list[str]


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._layers = root / "layers"
        self._refs = root / "refs"
        self._lock = threading.Lock()
        self._installing: set[str] = set()

    def prepare(self) -> None:
        try:
            for directory in (self.root, self._layers, self._refs):
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise disk_fault(exc, f"cannot create the layer store {self.root}") from exc

    def path(self, hexdigest: str) -> Path:
        return self._layers / hexdigest

    def has(self, hexdigest: str) -> bool:
        return (self._layers / f"{hexdigest}.json").exists()

    def staging(self) -> Path:
        return make_staging(self._layers)

    def publish(self, hexdigest: str, staging: Path, unpacked_bytes: int) -> None:
        """Move an extracted, verified layer into place (another install may have won the race)."""
        with self._lock:
            if self.has(hexdigest):
                remove_tree(staging)
                return
            try:
                remove_tree(self.path(hexdigest))  # a crash may have left it without its .json
                os.rename(staging, self.path(hexdigest))
                _write_json(self._layers / f"{hexdigest}.json", {"bytes": unpacked_bytes})
            except OSError as exc:
                raise disk_fault(exc, f"cannot store layer sha256:{hexdigest}") from exc

    def begin(self, bundle: Path, layers: list[str]) -> None:
        """Reference ``layers`` for ``bundle`` before they are fetched (collect() then keeps them)."""
        with self._lock:
            self._installing.add(str(bundle))
            try:
                _write_json(self._ref_file(bundle), {"bundle": str(bundle), "layers": layers})
            except OSError as exc:
                self._installing.discard(str(bundle))
                raise disk_fault(exc, "cannot record the layers of a bundle") from exc

    def end(self, bundle: Path) -> None:
        with self._lock:
            self._installing.discard(str(bundle))

    def share_bytes(self, layers: list[str]) -> int:
        """What ``layers`` take on disk (their unpacked size) divided among the live bundles that use each."""
        users = self._users()
        total = 0
        for hexdigest in set(layers):
            size = cast(_LayerFile, _read_json(self._layers / f"{hexdigest}.json")).get("bytes", 0)
            total += int(size) // max(1, users.get(hexdigest, 1))
        return total

    def layers_of(self, bundle: Path) -> list[str] | None:
        """The layers ``bundle`` references; None when it has no references (not made from an image)."""
        data = cast(_RefFile, _read_json(self._ref_file(bundle)))
        return None if "layers" not in data else list(data["layers"])

    def release(self, removed: Path) -> None:
        """Drop the references of ``removed`` and of every bundle below it, then collect."""
        prefix = str(removed).rstrip("/") + "/"
        with self._lock:
            for ref in self._ref_files():
                bundle = str(cast(_RefFile, _read_json(ref)).get("bundle", ""))
                if bundle == str(removed) or bundle.startswith(prefix):
                    ref.unlink(missing_ok=True)
        self.collect()

    def collect(self) -> None:
        """Delete the layers no live bundle references (and leftover staging directories)."""
        with self._lock:
            used = set(self._users())
            try:
                names = os.listdir(self._layers)
            except FileNotFoundError:
                return
            for name in names:
                hexdigest = name.removesuffix(".json")
                staging = name.startswith(".staging-")
                # Staging directories are another install's work in progress, unless none runs.
                if (staging and not self._installing) or (not staging and hexdigest not in used):
                    log.info("layer store: removing %s", name)
                    remove_tree(self._layers / name)

    def _users(self) -> dict[str, int]:
        """Layer → number of live bundles using it (caller holds the lock or does not mind a race)."""
        counts: dict[str, int] = {}
        for ref in self._ref_files():
            data = cast(_RefFile, _read_json(ref))
            bundle = str(data.get("bundle", ""))
            if bundle not in self._installing and not os.path.lexists(bundle):
                with contextlib.suppress(OSError):
                    ref.unlink()  # a bundle gone without release() (a crash): its layers are free
                continue
            for hexdigest in set(data.get("layers", [])):
                counts[hexdigest] = counts.get(hexdigest, 0) + 1
        return counts

    def _ref_files(self) -> list[Path]:
        try:
            return [self._refs / name for name in os.listdir(self._refs) if name.endswith(".json")]
        except FileNotFoundError:
            return []

    def _ref_file(self, bundle: Path) -> Path:
        return self._refs / (hashlib.sha1(str(bundle).encode(), usedforsecurity=False).hexdigest() + ".json")


def _write_json(path: Path, value: object) -> None:
    """Write atomically: a crash leaves the old file or the new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Fault(FaultCode.INTERNAL_ERROR, f"layer store: cannot read {path} ({exc})") from None
    return value if isinstance(value, dict) else {}
