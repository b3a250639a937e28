"""Fault injection for crash-recovery tests: ``DSM_CRASH_AT=install.unpacked`` makes the
daemon kill itself with SIGKILL when it reaches that step; ``DSM_RAISE_AT=install.unpacked``
makes that step raise an exception nobody foresaw (the operation must still end properly)."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


class InjectedError(RuntimeError):
    """Raised at a DSM_RAISE_AT point: deliberately no Fault."""


def crashpoint(name: str) -> None:
    if name in os.environ.get("DSM_CRASH_AT", "").split(","):
        log.warning("crash point %s reached: killing the daemon (DSM_CRASH_AT)", name)
        os.kill(os.getpid(), signal.SIGKILL)
    if name in os.environ.get("DSM_RAISE_AT", "").split(","):
        raise InjectedError(f"DSM_RAISE_AT={name}")
