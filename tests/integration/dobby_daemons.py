"""The two Dobbies a test can run against: the stand-in (always) and the real DobbyDaemon
(``-m dobby_real``, when ``DSM_DOBBY_DAEMON`` names one; skipped with the reason otherwise).

A test taking the ``dobby`` fixture (conftest.py) runs once per kind, so the stand-in is
held to what the real daemon does."""

from __future__ import annotations

import subprocess
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import dobby_real
from tests.support.dbusdaemon import PrivateBus
from tests.support.dobby_standin import running_standin

KINDS = [
    pytest.param("standin", id="standin"),
    pytest.param(
        "real",
        id="real",
        marks=[pytest.mark.dobby_real, pytest.mark.skipif(bool(dobby_real.missing()), reason=dobby_real.missing())],
    ),
]


@dataclass
class Dobby:
    kind: str
    bus: PrivateBus
    work_dir: Path

    def run(self) -> AbstractContextManager[subprocess.Popen[bytes] | subprocess.Popen[str]]:
        """Start this Dobby on the bus; it stops when the block ends (also after a kill)."""
        if self.kind == "real":
            return dobby_real.running_dobby(self.bus.address, self.work_dir)
        return running_standin(self.bus.address, self.work_dir)
