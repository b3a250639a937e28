"""The daemon's ``[fleet]`` section: the device side of fleet targeting (off by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsm_tr181.fleet.model import FleetError, parse_labels
from dsm_tr181.sections import Invalid


@dataclass(frozen=True)
class FleetSettings:
    enable: bool = False
    url: str = ""  # the repository, https://host:port
    token_file: Path | None = None  # the device token (a file only root reads; never in the tree or logs)
    ca_file: Path | None = None  # the CA of the repository's certificate; unset: the system store
    labels: str = ""  # "fleet=eu,model=xb8": the device's own labels
    derived_labels: bool = True  # add arch=, execenv= (the default ExecEnv) and firmware= (below)
    firmware_key: str = ""  # firmware compatibility key; "" = imagename from /version.txt when present
    execenv: str = ""  # where fleet DUs go; "" = the default ExecEnv
    interval: float = 60.0  # seconds between polls
    jitter: float = 0.2  # each wait is interval * (1 ± jitter), so devices spread out
    retry_min: float = 5.0  # backoff after a failed step: retry_min, doubling up to retry_max
    retry_max: float = 300.0
    timeout: float = 30.0  # per HTTP request to the repository
    start_timeout: float = 120.0  # how long EUs may take to reach their run intent before it is an error

    def __post_init__(self) -> None:
        if self.enable and not self.url.startswith(("https://", "http://")):
            raise Invalid("url", "must be the repository's https:// URL when enable = true")
        if self.enable and self.token_file is None:
            raise Invalid("token_file", "is needed when enable = true")
        if not 0 <= self.jitter < 1:
            raise Invalid("jitter", "must be in [0, 1)")
        for key in ("interval", "retry_min", "timeout", "start_timeout"):
            if getattr(self, key) <= 0:
                raise Invalid(key, "must be > 0")
        if self.retry_max < self.retry_min:
            raise Invalid("retry_max", "must be >= retry_min")
        try:
            parse_labels(self.labels)
        except FleetError as exc:
            raise Invalid("labels", str(exc)) from None
