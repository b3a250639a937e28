"""The repository port: what the server keeps, behind one interface for SQLite and PostgreSQL.

Every change to packages or specs bumps ``revision()`` in the same transaction, so API
processes sharing one database know when to rebuild their in-memory index. Blobs live in
the database too (content-addressed by sha256), so API processes keep no state of their own.
Tokens are stored as their sha256 only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from dsm_tr181.fleet.model import FleetError, Labels, Package, Spec


class Role(enum.Enum):
    OPERATOR = "operator"  # manage packages, specs, tokens; read devices; dry-run resolves
    DEVICE = "device"  # resolve for itself, report its state, download what it was told to run


class Exists(ValueError):
    """A package with that name and labelset (or a token of that name) is already there."""


@dataclass(frozen=True)
class TokenRecord:
    name: str  # for a device token: the device id
    role: Role
    labels: Labels = ()  # device token: labels the device cannot claim otherwise (bound by the operator)

    def check(self) -> None:
        """A device token is bound to labels: unbound, a device could claim any labelset and read
        the answer meant for devices of another fleet."""
        if self.role is Role.DEVICE and not self.labels:
            raise FleetError(f"device token {self.name}: bind it to its labels (--labels fleet=...), "
                             "which the device cannot claim otherwise")  # fmt: skip


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    labels: Labels = ()
    last_seen: float = 0.0
    answer: dict[str, Any] = field(default_factory=dict)  # the last resolve answer (apps, problems)
    state: dict[str, Any] = field(default_factory=dict)  # the device's last report
    last_report: float = 0.0

    @property
    def converged(self) -> bool:
        """Its report names exactly the packages of its last answer and no failure."""
        wanted = sorted(app["package"] for app in self.answer.get("apps", []))
        installed = sorted(item.get("package", "") for item in self.state.get("installed", []))
        problems = self.answer.get("problems") or self.state.get("failures")
        return bool(self.state) and wanted == installed and not problems

    @property
    def last_error(self) -> str:
        errors = [p["message"] for p in self.answer.get("problems", [])]
        errors += [f.get("message", "") for f in self.state.get("failures", [])]
        return "; ".join(errors)


class Repository(Protocol):
    def revision(self) -> int: ...

    def add_package(self, package: Package, blob: bytes | None, replace: bool = False) -> None:
        """Store a package (and its blob, if the repository serves it); Exists unless ``replace``."""

    def packages(self) -> list[Package]: ...

    def package(self, package_id: str) -> Package | None: ...

    def delete_package(self, package_id: str) -> bool: ...

    def blob(self, sha256: str) -> bytes | None: ...

    def put_spec(self, spec: Spec) -> bool:
        """Create or replace; True when created."""

    def specs(self) -> list[Spec]: ...

    def spec(self, spec_id: str) -> Spec | None: ...

    def delete_spec(self, spec_id: str) -> bool: ...

    def add_token(self, token_hash: str, record: TokenRecord) -> None: ...

    def token(self, token_hash: str) -> TokenRecord | None: ...

    def tokens(self) -> list[TokenRecord]: ...

    def delete_token(self, name: str) -> bool: ...

    def device_seen(self, device: str, labels: Labels, answer: dict[str, Any], when: float) -> None: ...

    def device_report(self, device: str, state: dict[str, Any], when: float) -> None: ...

    def devices(self) -> list[DeviceRecord]: ...

    def device(self, device: str) -> DeviceRecord | None: ...

    def close(self) -> None: ...
