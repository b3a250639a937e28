"""Each EU's effective container spec: computed at install and update, persisted with the
EU's bundle, handed to the runtime at every start (see :mod:`dsm_tr181.containerspec`).

The spec of EU ``<id>`` lives in ``<bundle>/.dsm-spec/<id>.json`` beside (never over) the
bundle's own config.json, so it is replaced with the bundle on Update and removed with it
on Uninstall. A restart runs the persisted spec; it is recomputed only when missing.

User namespaces: an EU of an ExecEnv whose policy asks for one gets a range of host
UIDs/GIDs (``NumRequiredUIDs`` of them, at least ``uid_range_size``: the input is deprecated
and defaults to 1, too few for any application that switches users) that no other EU of this
daemon holds, recorded with the EU so that it is stable across restarts. Debian 12's runc
cannot id-map the root filesystem, so the DU's files are shifted into the range at install.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsm_tr181.containerspec import EuInputs, SpecContext, effective_spec, summarize
from dsm_tr181.containerspec.resources import Limits
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import euinputs
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecutionUnitRecord
from dsm_tr181.lcm.settings import ExecEnvSettings

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

SPEC_DIR = ".dsm-spec"
_MAX_CONFIG_BYTES = 4 << 20


class Confinement:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self._reserved: dict[int, tuple[int, int]] = {}  # EU instance → UID range, before its commit

    # -- specs ------------------------------------------------------------------------------

    def derive(self, eu: ExecutionUnitRecord, bundle: Path, leaving: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The effective spec of ``eu`` running ``bundle``, without the data volumes named in
        ``leaving`` (an Update removes them); Fault if the bundle may not run so."""
        settings = self.lcm.execenvs.settings.get(eu.ee)
        if settings is None:
            raise Fault(FaultCode.INVALID_CONFIGURATION, f"execution environment {eu.ee!r} is no longer configured")
        network, etc_files = self.lcm.networking.context(eu, bundle)
        context = SpecContext(
            execenv=eu.ee,
            container_id=eu.container_id,
            cgroup_path=f"/{self.lcm.settings.instance_name}/{eu.ee}/{eu.container_id}",
            arch=platform.machine(),
            uid_base=eu.uid_base,
            uid_count=eu.uid_count,
            execenv_limits=execenv_limits(settings),
            cpus=os.cpu_count() or 1,
            network=network,
            etc_files=etc_files,
        )
        inputs = EuInputs(
            privileged=eu.privileged,
            resources=euinputs.limits_of(eu),
            env=euinputs.env_of(eu),
            host_objects=euinputs.host_objects_of(eu),
            volumes=self.lcm.appdata.mounts(du, leaving) if (du := self.lcm.deployments.record_of(eu.du)) else (),
            network_mode=self.lcm.networking.mode(eu),
        )
        policy = settings.confinement
        if settings.network == "host":  # the operator gave the ExecEnv's EUs the host's network
            policy = replace(policy, allow_share_parent_network=True)
        return effective_spec(_read_config(bundle), str(bundle), inputs, policy, context)

    def persist(self, eu: ExecutionUnitRecord, bundle: Path, spec: dict[str, Any]) -> None:
        target = _spec_file(eu, bundle)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        staged = target.parent / f".{eu.container_id}.tmp"
        with open(staged, "w") as out:
            json.dump(spec, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, target)

    def spec(self, eu: ExecutionUnitRecord, du: DeploymentUnitRecord) -> dict[str, Any]:
        """The persisted spec of ``eu`` (recomputed and persisted again when missing).
        A privileged EU whose ExecEnv no longer allows privileged EUs is refused."""
        settings = self.lcm.execenvs.settings.get(eu.ee)
        if eu.privileged and (settings is None or not settings.confinement.allow_privileged):
            raise Fault(FaultCode.REQUEST_DENIED, f"execution environment {eu.ee!r} does not allow privileged units")
        bundle = Path(du.bundle)
        try:
            spec: dict[str, Any] = json.loads(_spec_file(eu, bundle).read_text())
            return spec
        except (OSError, ValueError) as exc:
            log.warning("EU %s: recomputing its container spec (%s)", eu.euid, exc)
        spec = self.derive(eu, bundle)
        self.persist(eu, bundle, spec)
        return spec

    @staticmethod
    def persisted_root(eu: ExecutionUnitRecord, du: DeploymentUnitRecord) -> Path:
        """The root filesystem the persisted spec of ``eu`` runs (OSError or ValueError when
        that file is missing or unreadable); reads a file only, so any thread may call it."""
        spec = json.loads(_spec_file(eu, Path(du.bundle)).read_text())
        return Path(str((spec.get("root") or {}).get("path", "")))

    def prepare(self, eu: ExecutionUnitRecord, bundle: Path, leaving: frozenset[str] = frozenset()) -> dict[str, Any]:
        """At install/update: check and persist the spec (see :meth:`derive`); shift the files
        into the EU's UID range."""
        spec = self.derive(eu, bundle, leaving)
        if eu.uid_count:
            _make_traversable(bundle, self.lcm.settings.bundle_dir)
            shift_ownership(Path(spec["root"]["path"]), eu.uid_base, eu.uid_count)
        self.persist(eu, bundle, spec)
        log.info("EU %s confinement: %s", eu.euid, json.dumps(summarize(spec), separators=(",", ":")))
        return spec

    def summary(self, eu: ExecutionUnitRecord, du: DeploymentUnitRecord) -> dict[str, Any]:
        try:
            return summarize(self.spec(eu, du))
        except Fault as fault:
            return {"error": fault.message}

    # -- UID ranges ---------------------------------------------------------------------------

    def reserve(self, eu: ExecutionUnitRecord, wanted: int) -> None:
        """Give ``eu`` a UID/GID range if its ExecEnv runs EUs in user namespaces."""
        settings = self.lcm.execenvs.settings.get(eu.ee)
        if settings is None or not settings.confinement.user_namespace:
            return
        size = max(wanted, self.lcm.settings.uid_range_size)
        taken = [(u.record.uid_base, u.record.uid_count) for u in self.lcm.executions.units.values()]
        taken += [r for n, r in self._reserved.items() if n != eu.instance]
        eu.uid_base = first_free(self.lcm.settings.uid_range_base, size, taken)
        eu.uid_count = size
        self._reserved[eu.instance] = (eu.uid_base, size)

    def release(self, eu: ExecutionUnitRecord) -> None:
        """The reservation is now held by the committed EU record (or given up)."""
        self._reserved.pop(eu.instance, None)


def execenv_limits(settings: ExecEnvSettings) -> Limits:
    return Limits(settings.allocated_memory_kib, settings.allocated_cpu_percent, settings.allocated_disk_kib)


def first_free(base: int, size: int, taken: list[tuple[int, int]]) -> int:
    """The lowest start >= ``base`` of ``size`` IDs overlapping none of ``taken``."""
    start = base
    for used_base, used_size in sorted(r for r in taken if r[1] > 0):
        if used_base + used_size <= start:
            continue
        if used_base >= start + size:
            break
        start = used_base + used_size
    if start + size > (1 << 32) - 1:
        raise Fault(FaultCode.SYSTEM_RESOURCES_EXCEEDED, "no free UID range for the user namespace")
    return start


def _read_config(bundle: Path) -> dict[str, Any]:
    try:
        with open(bundle / "config.json", "rb") as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise ValueError("larger than 4 MiB")
        config = json.loads(data)
    except (OSError, ValueError, RecursionError) as exc:
        raise Fault(FaultCode.CORRUPT_DATA, f"bundle {bundle}: unreadable config.json: {exc}") from None
    if not isinstance(config, dict):
        raise Fault(FaultCode.CORRUPT_DATA, f"bundle {bundle}: config.json is not an object")
    return config


def shift_ownership(rootfs: Path, base: int, count: int) -> None:
    """Owner n of every file becomes base + n (n < count); others become the range's last ID.
    A file with other hard links (an image layer shared with other DUs) is copied first, so
    that only this DU's copy changes owner."""
    last = base + count - 1
    for directory, dirs, files in os.walk(rootfs):
        for name in (directory, *(os.path.join(directory, entry) for entry in (*dirs, *files))):
            info = os.lstat(name)
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                _unshare(name)
                info = os.lstat(name)
            uid = base + info.st_uid if info.st_uid < count else last
            gid = base + info.st_gid if info.st_gid < count else last
            mode = stat.S_IMODE(info.st_mode)
            os.lchown(name, uid, gid)
            if mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(info.st_mode):
                os.chmod(name, mode)  # chown clears setuid/setgid bits; the packager allows none anyway


def _unshare(path: str) -> None:
    staged = f"{path}.dsm-unshare"
    shutil.copy2(path, staged, follow_symlinks=False)
    os.chown(staged, os.lstat(path).st_uid, os.lstat(path).st_gid)
    os.replace(staged, path)


def _make_traversable(bundle: Path, bundle_dir: Path) -> None:
    """The EU's root user (a host UID of its range) must reach its root filesystem: the
    daemon's own directories get o+x; a parent it does not own must have it already."""
    ours = (bundle, *[p for p in bundle.parents if p == bundle_dir or bundle_dir in p.parents])
    for directory in ours:
        info = os.stat(directory)
        if not info.st_mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
    for directory in bundle_dir.parents:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise Fault(
                FaultCode.INVALID_CONFIGURATION,
                f"user namespaces need every parent of {bundle_dir} to be searchable by others; {directory} is not",
            )


def _spec_file(eu: ExecutionUnitRecord, bundle: Path) -> Path:
    """Where ``eu``'s spec is persisted in its DU's bundle."""
    return bundle / SPEC_DIR / f"{eu.container_id}.json"
