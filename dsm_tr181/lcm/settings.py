"""The LCM's settings: where things live, which execution environments exist, policies."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from dsm_tr181.containerspec import ConfinementPolicy
from dsm_tr181.sections import Invalid

EE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
CGROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ExecEnvSettings:
    """One Device.SoftwareModules.ExecEnv row, bound to a runtime adapter by name."""

    name: str = "default"
    runtime: str = "runc"
    enable: bool = True
    vendor: str = "rdkcentral"
    version: str = ""
    type: str = ""  # "" = "OCI runtime (<runtime>)"
    initial_run_level: int = 0
    initial_eu_run_level: int = 0
    allocated_disk_kib: int = -1
    allocated_memory_kib: int = -1
    allocated_cpu_percent: int = -1
    confinement: ConfinementPolicy = field(default_factory=ConfinementPolicy)
    # Trust-store certificate names (file names without extension) Signers starts with.
    signers: tuple[str, ...] = ()
    # Refuse InstallDU()/Update() without a Signature (7036); installed unsigned DUs stay.
    require_signature: bool = False
    # EUs' network: "none" (a namespace with loopback only), "bridged" (a namespace on the
    # ExecEnv's bridge, NAT, port mappings) or "host" (the host's network: a policy decision)
    network: str = "none"
    bridge: str = ""  # bridged: the bridge's name ("" = "dsm-<name>", cut to 15 characters)
    subnet: str = "10.89.0.0/24"  # bridged: the EUs' subnet; its first address is the bridge's
    dns: tuple[str, ...] = ()  # nameservers of the EUs' resolv.conf (() = the host's)

    def __post_init__(self) -> None:
        if not EE_NAME.fullmatch(self.name):
            raise Invalid("name", f"{self.name!r} must match {EE_NAME.pattern}")
        if not 0 <= self.initial_run_level <= 65535:
            raise Invalid("initial_run_level", "must be 0..65535")
        if not -1 <= self.initial_eu_run_level <= 65535:
            raise Invalid("initial_eu_run_level", "must be -1..65535")
        if self.network not in ("none", "bridged", "host"):
            raise Invalid("network", f"{self.network!r} is not one of none, bridged, host")
        try:
            subnet = ipaddress.ip_network(self.subnet)
        except ValueError as exc:
            raise Invalid("subnet", str(exc)) from None
        if subnet.version != 4 or subnet.num_addresses < 4:
            raise Invalid("subnet", "must be an IPv4 network of at least 4 addresses")
        if len(self.bridge_name) > 15:
            raise Invalid("bridge", "must be at most 15 characters")
        for server in self.dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise Invalid("dns", f"{server!r} is not an IP address") from None
        # TR-181 ExecEnv.{i}.AllocatedDiskSpace/AllocatedMemory int[-1:], AllocatedCPUPercent int[-1:100].
        for key in ("allocated_disk_kib", "allocated_memory_kib", "allocated_cpu_percent"):
            if getattr(self, key) < -1:
                raise Invalid(key, "must be -1 (no limit) or more")
        if self.allocated_cpu_percent > 100:
            raise Invalid("allocated_cpu_percent", "must be at most 100")

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"dsm-{self.name}"[:15]

    @property
    def type_name(self) -> str:
        return self.type or f"OCI runtime ({self.runtime})"


@dataclass(frozen=True)
class LcmSettings:
    bundle_dir: Path  # unpacked DUs: <bundle_dir>/<du instance>/<generation>/
    log_dir: Path  # container output: <log_dir>/<container id>.log
    execenvs: tuple[ExecEnvSettings, ...] = (ExecEnvSettings(),)
    default_execenv: str = ""  # "" = the first enabled one
    allow_downgrade: bool = False
    max_parallel_operations: int = 2  # installs/updates/uninstalls running at once; others queue
    operation_timeout: float = 3600.0  # TR-369 R-SMM.1 allows at most 24 h
    # Update(): seconds the new EUs must stay Active (when the old ones were) before the old
    # version is dropped; 0: reaching Active is enough. A failure rolls the old version back.
    update_settle_time: float = 1.0
    shutdown_timeout: float = 20.0  # at SIGTERM, seconds running operations get to end before they are cancelled
    eu_log_max_bytes: int = 1 << 20
    eu_log_backups: int = 2
    usage_interval: float = 2.0  # seconds a memory/CPU sample (taken when read) is reused by later reads
    disk_usage_interval: float = 60.0  # seconds between DiskSpaceInUse samples (a walk of each EU's rootfs)
    stop_containers_on_exit: bool = False  # default: containers outlive a daemon restart
    preinstalled: tuple[str, ...] = field(default=())  # DU URLs Reset() restores (factory state)
    instance_name: str = "dsm"  # names this daemon's cgroups: /<instance_name>/<execenv>/<container>
    uid_range_base: int = 1_000_000  # first host UID/GID given to EUs in user namespaces
    uid_range_size: int = 65536  # UIDs per EU at least (more when InstallDU()'s NumRequiredUIDs asks)
    trust_dir: Path | None = None  # PEM certificates served as Device.Security.Certificate rows

    def __post_init__(self) -> None:
        names = [ee.name for ee in self.execenvs]
        if not names:
            raise Invalid("execenvs", "at least one execution environment is needed")
        if len(set(names)) != len(names):
            raise Invalid("execenvs", "execution environment names must be unique")
        if self.default_execenv and self.default_execenv not in names:
            raise Invalid("default_execenv", f"{self.default_execenv!r} is not a configured execution environment")
        if self.max_parallel_operations < 1:
            raise Invalid("max_parallel_operations", "must be >= 1")
        # Intervals are how long a sample is reused or between disk sweeps: zero makes no sense.
        for name in (
            "usage_interval",
            "disk_usage_interval",
            "operation_timeout",
            "shutdown_timeout",
            "eu_log_max_bytes",
        ):
            if getattr(self, name) <= 0:
                raise Invalid(name, "must be > 0")
        if not 0 <= self.update_settle_time <= 3600:
            raise Invalid("update_settle_time", "must be 0..3600")
        if not CGROUP_NAME.fullmatch(self.instance_name):
            raise Invalid("instance_name", f"{self.instance_name!r} must match {CGROUP_NAME.pattern}")
        if not 1 <= self.uid_range_base < 1 << 31:
            raise Invalid("uid_range_base", "must be 1..2147483647")
        if not 1 <= self.uid_range_size <= 1 << 24:
            raise Invalid("uid_range_size", "must be 1..16777216")
        if self.eu_log_backups < 0:
            raise Invalid("eu_log_backups", "must be >= 0")
