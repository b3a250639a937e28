"""The contracts between the LCM core and its adapters.

Packagers turn a URL into an unpacked OCI bundle on disk; runtimes run a bundle as a
container. Each implementation lives in its own module under ``dsm_tr181.packagers``
or ``dsm_tr181.runtimes`` and is chosen by configuration (see ``dsm_tr181.adapters``).
The core only ever sees these types.

Errors: implementations raise :class:`dsm_tr181.errors.Fault` with the TR-181 fault
the controller should see (for packagers the ``DUStateChange!`` fault codes:
SERVER_UNREACHABLE, SERVER_INSECURE, CORRUPT_DATA, SYSTEM_RESOURCES_EXCEEDED, ...).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.schema.types import Value


@dataclass(frozen=True)
class LayerProgress:
    """Where the download of one layer of an image is (its bytes of its size)."""

    index: int  # 1-based, in the manifest's order
    count: int  # layers of the image
    digest: str  # "sha256:<hex>"
    done: int
    total: int
    stored: bool = False  # already in the layer store: nothing to download


class ProgressCallback(Protocol):
    """Called with (bytes done, total bytes or None when unknown) and, for an image, the
    layer those bytes belong to. May be called from any thread; the LCM marshals it onto its loop."""

    def __call__(self, done: int, total: int | None, layer: LayerProgress | None = None, /) -> None: ...


@dataclass(frozen=True)
class PackageSource:
    """Where a DU comes from. Credentials never appear in repr or logs."""

    url: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    # Expected archive digest ("sha256:<hex>"), from the caller; the packager may
    # also find one in a sibling ".sha256" file.
    digest: str = ""
    # InstallDU()/Update() Signature: an http(s)/file URL or a data: URI of a detached
    # CMS signature over the archive, "" for none; checked against ``signers``, the DER
    # certificates of the ExecEnv's Signers, before anything is unpacked.
    signature: str = ""
    signers: tuple[bytes, ...] = field(default=(), repr=False)
    # The ExecEnv refuses unsigned DUs. The LCM refuses a source with no ``signature`` itself,
    # except an ``oci://`` reference: the image packager looks for a registry-stored
    # signature first and refuses only when there is none.
    require_signature: bool = False


@dataclass(frozen=True)
class BundleInfo:
    """What the packager learnt from an unpacked bundle (config.json, annotations)."""

    path: Path  # the bundle directory: config.json + rootfs/
    name: str
    version: str = ""
    vendor: str = ""
    description: str = ""
    digest: str = ""  # "sha256:<hex>" of the archive as fetched
    disk_usage_kib: int = 0
    signed_by: str = ""  # Subject of the certificate whose signature was verified; "" unsigned
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustedCertificate:
    """One certificate of the trust store, as a Device.Security.Certificate row shows it."""

    name: str  # stable key (the file name without extension)
    der: bytes = field(repr=False)
    values: dict[str, Value] = field(repr=False)  # the row's parameters but Enable


class Packager(Protocol):
    """Fetches and unpacks DU archives."""

    async def unpack(self, source: PackageSource, target: Path, progress: ProgressCallback) -> BundleInfo:
        """Fetch ``source`` and unpack it so that ``target`` becomes the bundle directory.

        ``target`` must not exist; its parent does. Work happens in a staging
        directory beside ``target`` (same filesystem) whose name starts with
        ``.staging-``; it is renamed to ``target`` only when complete and removed on
        any failure, so after a failure nothing new is left on disk.
        """
        ...

    async def remove(self, bundle: Path) -> None:
        """Delete an unpacked bundle directory (idempotent)."""
        ...


@runtime_checkable
class SharedStorage(Protocol):
    """A packager whose bundles share stored parts (the image packager's layers)."""

    def shared_kib(self, bundle: Path) -> int | None:
        """KiB of shared storage that falls to ``bundle`` now (each shared part's size divided
        among the bundles using it); None for a bundle that shares nothing."""
        ...


class ContainerState(enum.Enum):
    ABSENT = "absent"  # the runtime does not know the container
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ContainerStatus:
    state: ContainerState
    pid: int = 0


@dataclass(frozen=True)
class ContainerExit:
    """A container stopped on its own or after stop(); reported through watch()."""

    container_id: str
    exit_status: int | None  # exit code, or None when unknown
    signal: int | None = None  # terminating signal, if it was killed by one
    oom_killed: bool = False  # the kernel's OOM killer killed a process of the container


@dataclass(frozen=True)
class ContainerUsage:
    memory_kib: int = -1  # resident memory of the container's processes
    cpu_percent: int = -1
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class StartSpec:
    """What a runtime starts: the effective OCI spec (see :mod:`dsm_tr181.containerspec`),
    never the bundle's own config.json. Its ``root.path`` is absolute; the runtime writes
    the spec into a bundle directory of its own."""

    container_id: str  # stable, derived from the EU (never random)
    config: Mapping[str, Any] = field(repr=False)
    log_path: Path  # stdout/stderr of the container go here (rotated by the runtime)
    log_max_bytes: int = 1 << 20
    log_backups: int = 2
    # linux.resources of the ExecEnv's parent cgroup (the parent of config's cgroupsPath): its
    # Allocated* limits, applied before the container is created by a runtime whose
    # ``parent_cgroup`` attribute is true (others ignore it); {}: none.
    execenv_resources: Mapping[str, Any] = field(default_factory=dict)


ExitCallback = Callable[[ContainerExit], None]

# (available, reason): False with the reason when the runtime goes away, True when it
# may be back (the LCM checks with a call before it believes it).
AvailabilityCallback = Callable[[bool, str], None]


class RuntimeUnavailable(Fault):
    """The runtime itself cannot be reached (its daemon absent or crashed, its binary
    gone): its ExecEnvs are Error until it answers again, nothing else is affected."""

    def __init__(self, message: str) -> None:
        super().__init__(FaultCode.INTERNAL_ERROR, message)


class Runtime(Protocol):
    """Runs OCI bundles. All methods are coroutines run on the daemon's loop.

    Each implementation class also offers ``create(section, state_dir)``: build it from
    its configuration section and the daemon's state directory.
    """

    name: str

    async def start(self, spec: StartSpec) -> ContainerStatus:
        """Create and start the container; return once it runs (or raise Fault)."""
        ...

    async def stop(self, container_id: str, timeout: float | None = None) -> None:
        """Ask the container to stop, kill it after ``timeout`` s (None: the adapter's
        default), then delete it. Idempotent."""
        ...

    async def status(self, container_id: str) -> ContainerStatus: ...

    async def usage(self, container_id: str) -> ContainerUsage: ...

    async def list_ids(self) -> list[str]:
        """Ids of every container this runtime holds for us (for orphan cleanup)."""
        ...

    async def remove(self, container_id: str) -> None:
        """Forget a stopped or stale container (idempotent)."""
        ...

    def watch(self, callback: ExitCallback) -> None:
        """Report every container exit to ``callback`` (called on the daemon's loop)."""
        ...

    async def adopt(self) -> list[str]:
        """After a daemon restart: watch the containers still running; return their ids."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PausableRuntime(Runtime, Protocol):
    """Optional ability: freeze and thaw a running container."""

    async def pause(self, container_id: str) -> None: ...

    async def resume(self, container_id: str) -> None: ...


@runtime_checkable
class MonitoredRuntime(Runtime, Protocol):
    """Optional ability: the runtime tells when its daemon leaves or (re)joins."""

    def watch_availability(self, callback: AvailabilityCallback) -> None:
        """Call ``callback`` on the daemon's loop when availability may have changed."""


@runtime_checkable
class SampledRuntime(Runtime, Protocol):
    """Optional ability: usage read at once, without blocking (a few cgroup and /proc file
    reads), so that a read of MemoryInUse can sample it on the spot."""

    def usage_now(self, container_id: str) -> ContainerUsage:
        """What usage() returns, computed synchronously."""
        ...


class Volumes(Protocol):
    """Application data volumes of a fixed capacity on the host, each mounted on a directory
    that is bind-mounted into containers. Blocking calls (run them in a thread)."""

    def mountpoint(self, key: str) -> Path: ...

    def mount(self, key: str) -> None:
        """Mount the volume if it is not (Fault when it cannot be)."""
        ...

    def create(self, key: str, capacity_mib: int) -> None:
        """Make and mount an empty volume; Fault 7227 when it cannot."""
        ...

    def remove(self, key: str) -> None:
        """Unmount and delete (idempotent)."""
        ...

    def wipe(self, key: str) -> None:
        """Empty the volume again."""
        ...

    def own(self, key: str, uid: int, gid: int) -> None:
        """Give the mounted volume's top directory to ``uid``/``gid`` (a user-namespaced EU's root)."""
        ...

    def used_kib(self, key: str) -> int: ...

    def sweep(self, owned: set[str]) -> list[str]:
        """At start: mount the ``owned`` volumes, remove every other one; the keys removed."""
        ...


class Network(Protocol):
    """An ExecEnv's bridged network: per EU a named network namespace on its bridge.
    Blocking calls (run them in a thread)."""

    def namespace_path(self, euid: str) -> Path: ...

    def attach(self, euid: str, address: str, mappings: tuple[tuple[str, int, int], ...]) -> None:
        """Namespace, link, address, default route and port mappings ((protocol, external,
        internal) ports) of the EU; anything left from before is replaced. Fault on failure."""
        ...

    def detach(self, euid: str) -> None:
        """Remove all of it (idempotent)."""
        ...

    def sweep(self, owned: set[str]) -> list[str]:
        """At start: remove what belongs to EUs not in ``owned``; their EUIDs."""
        ...


class Sealer(Protocol):
    """Encrypts secrets (download credentials) before they are stored."""

    def seal(self, plain: str) -> str: ...

    def unseal(self, sealed: str) -> str: ...
