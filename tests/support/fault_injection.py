"""The daemon with fault injection, for the tests: ``python -m tests.support.fault_injection
ARGS`` runs ``dsm ARGS`` after registering an observer of the LCM's crash points.

``DSM_CRASH_AT=install.unpacked`` (comma-separated points) makes the daemon kill itself with
SIGKILL when it reaches that point; ``DSM_RAISE_AT=...`` makes that point raise an exception
nobody foresaw (the operation must still end properly). The product itself never reads
these variables.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from dsm_tr181 import daemon
from dsm_tr181.lcm import crashpoints

log = logging.getLogger("dsm.fault_injection")


class InjectedError(RuntimeError):
    """Raised at a DSM_RAISE_AT point: deliberately no Fault."""


def inject(name: str) -> None:
    if name in os.environ.get("DSM_CRASH_AT", "").split(","):
        log.warning("crash point %s reached: killing the daemon (DSM_CRASH_AT)", name)
        os.kill(os.getpid(), signal.SIGKILL)
    if name in os.environ.get("DSM_RAISE_AT", "").split(","):
        raise InjectedError(f"DSM_RAISE_AT={name}")


if __name__ == "__main__":
    crashpoints.observe(inject)
    sys.exit(daemon.main(sys.argv[1:]))
