"""What the LCM persists: one record per ExecEnv, DeploymentUnit, ExecutionUnit and
in-flight operation, plus the store contract that keeps them.

Records are journaled *before* the action they describe (see the LCM modules), so
that after a crash the store says what was under way and recovery can undo or finish it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol, Self


class Record:
    """Common JSON round trip; ``KIND`` names the store table."""

    __slots__ = ()
    KIND: ClassVar[str]

    def key(self) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # every Record subclass is a dataclass
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(slots=True)
class ExecEnvRecord(Record):
    KIND: ClassVar[str] = "execenv"
    name: str
    instance: int
    enable: bool = True
    initial_run_level: int = 0
    initial_eu_run_level: int = 0
    restart_count: int = 0
    restart_reason: str = ""
    last_restarted: str = ""  # TR-106 dateTime text, "" never
    # CurrentRunLevel set by SetRunLevel(); None: InitialRunLevel (the ExecEnv started since)
    current_run_level: int | None = None
    # Signers as a controller set them (Device.Security.Certificate refs); None: as configured
    signers: list[str] | None = None

    def run_level(self) -> int:
        """What CurrentRunLevel reads."""
        return self.initial_run_level if self.current_run_level is None else self.current_run_level

    def key(self) -> str:
        return self.name


@dataclass(slots=True)
class CertificateRecord(Record):
    """A trust-store certificate's row: its instance number and Enable survive restarts."""

    KIND: ClassVar[str] = "certificate"
    name: str  # the trust store's name for it (file name without extension)
    instance: int
    enable: bool = True

    def key(self) -> str:
        return self.name


@dataclass(slots=True)
class DeploymentUnitRecord(Record):
    KIND: ClassVar[str] = "deploymentunit"
    instance: int
    uuid: str
    ee: str  # ExecEnv name
    status: str  # a states.DuStatus
    url: str
    alias: str = ""
    duid: str = ""
    credentials: str = ""  # sealed "user\\0password" of the last Install/Update, "" for none
    sealed_url: str = ""  # the full URL, sealed, when it has a query (``url`` is served without it)
    name: str = ""
    vendor: str = ""
    version: str = ""
    description: str = ""
    module_version: str = ""
    bundle: str = ""  # current bundle directory
    digest: str = ""
    disk_kib: int = 0
    installed: str = ""
    last_update: str = ""
    eus: list[int] = field(default_factory=list)
    signed_by: str = ""  # Subject of the verified signer of the current bundle, "" unsigned

    def key(self) -> str:
        return str(self.instance)


@dataclass(slots=True)
class ExecutionUnitRecord(Record):
    KIND: ClassVar[str] = "executionunit"
    instance: int
    du: int
    euid: str
    container_id: str
    ee: str
    alias: str = ""
    name: str = ""
    vendor: str = ""
    version: str = ""
    description: str = ""
    auto_start: bool = False
    run_level: int = 0
    requested_state: str = "Idle"  # a states.EuStatus: Idle / Active
    shutdown_delay: int = 10
    privileged: bool = False
    uid_base: int = 0  # first host UID/GID of its user namespace (uid_count 0: none)
    uid_count: int = 0
    creation_time: str = ""
    log_file: str = ""
    log_row: int = 0  # Device.DeviceInfo.VendorLogFile instance
    fault_code: str = "NoFault"  # a states.EuFault
    fault_message: str = ""
    # ExecutionUnit.{i}.AutoRestart. parameters by name
    auto_restart: dict[str, Any] = field(default_factory=dict)
    # InstallDU()/Update() inputs (see lcm/euinputs.py): Resources.* (memory_kib, cpu_percent,
    # disk_kib; -1 none), EnvVariable [key, value] pairs, HostObject {Source, Destination, Options}
    resources: dict[str, int] = field(default_factory=dict)
    env: list[list[str]] = field(default_factory=list)
    host_objects: list[dict[str, str]] = field(default_factory=list)
    # bridged networking: its address (allocated at install, kept) and NetworkConfig.PortMapping
    # rows {Protocol, ExternalPort, InternalPort, Interface}
    address: str = ""
    network_mode: str = ""  # Bridged / None / ShareParent (lcm/networking.py); "" = the ExecEnv's
    # memory limit (KiB) and CFS quota (us) its container last started with (-1: none), what it
    # holds of its ExecEnv's allocation when adopted after a daemon restart (lcm/admission.py)
    held_memory_kib: int = -1
    held_quota_us: int = -1
    port_mappings: list[dict[str, Any]] = field(default_factory=list)

    def key(self) -> str:
        return str(self.instance)


@dataclass(slots=True)
class OperationRecord(Record):
    """An Install/Update/Uninstall under way (deleted when it completes)."""

    KIND: ClassVar[str] = "operation"
    du: int
    kind: str  # states.Operation.kind: install / update / uninstall
    started: str
    target: str = ""  # bundle directory being created (install, update)
    previous: str = ""  # bundle directory being replaced (update)
    # update: "journaled" → "swapped" (the new bundle is the DU's, on trial) → "proven", or
    # → "rollback" (the old version is being brought back)
    stage: str = "journaled"
    restart_eus: list[int] = field(default_factory=list)  # EUs to start again after an update
    retain_data: bool = False  # RetainData of an Uninstall/Update: Forever volumes stay
    named_volumes: list[str] = field(default_factory=list)  # update: its ApplicationData names
    # update: the DU and EU records before the swap ("du", "eus") and the keys of the volumes
    # the update created ("volumes"), what a rollback restores
    old: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return str(self.du)


@dataclass(slots=True)
class PendingEventRecord(Record):
    """A DUStateChange! not yet delivered (lcm.outcomes): its arguments as TR-106 text."""

    KIND: ClassVar[str] = "pending_event"
    seq: int
    path: str
    args: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.seq:012d}"


@dataclass(slots=True)
class AppDataRecord(Record):
    """An application data volume (ExecEnv.{i}.ApplicationData.{i}); the volume exists
    only while its record does (``creating`` until the operation that made it commits)."""

    KIND: ClassVar[str] = "appdata"
    ee: str
    instance: int
    application_uuid: str
    name: str
    capacity_mib: int
    retain: str  # UntilStopped / Forever
    access_path: str
    state: str = "creating"  # creating / ready

    def key(self) -> str:
        return f"{self.ee}-{self.instance}"


RECORD_TYPES: dict[str, type[Record]] = {
    t.KIND: t
    for t in (
        ExecEnvRecord,
        DeploymentUnitRecord,
        ExecutionUnitRecord,
        OperationRecord,
        CertificateRecord,
        PendingEventRecord,
        AppDataRecord,
    )
}


@dataclass
class Snapshot:
    """Everything the store holds, loaded at start."""

    records: dict[str, dict[str, Record]]  # kind -> key -> record
    counters: dict[str, int]  # table path -> next instance number

    def of(self, kind: type[Record]) -> list[Any]:
        return list(self.records.get(kind.KIND, {}).values())


class Store(Protocol):
    def load(self) -> Snapshot: ...

    def commit(
        self,
        put: list[Record] | None = None,
        delete: list[Record] | None = None,
        counters: dict[str, int] | None = None,
        *,
        durable: bool = True,
    ) -> None:
        """Apply all changes in one durable transaction (or none of them); a Fault if it cannot
        (RESOURCES_EXCEEDED when its file system is full). ``durable=False``: as atomic and
        kept if the daemon dies, but flushed to disk just after returning instead of before."""
        ...

    def close(self) -> None: ...
