"""Paths of the tables the LCM fills, and time helpers for the values it writes."""

from __future__ import annotations

from datetime import UTC, datetime

from dsm_tr181.schema.types import UNKNOWN_TIME, format_datetime

SM = "Device.SoftwareModules."
EE_TABLE = SM + "ExecEnv."
DU_TABLE = SM + "DeploymentUnit."
EU_TABLE = SM + "ExecutionUnit."
LOG_TABLE = "Device.DeviceInfo.VendorLogFile."
DU_STATE_CHANGE = SM + "DUStateChange!"
INSTALL_DU = SM + "InstallDU()"
CERT_TABLE = "Device.Security.Certificate."
# TR-106's Infinite Time: AutoRestart.NextRestart when "no restart is currently scheduled".
INFINITE_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def stamp(value: datetime | None = None) -> str:
    """A time as stored in records (TR-106 text)."""
    return format_datetime(value or now())


def from_stamp(text: str) -> datetime:
    """A stored time ("" = unknown) as a dateTime value."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else UNKNOWN_TIME
