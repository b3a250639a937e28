"""A daemon shared by the adversarial modules that need one (starting one costs more than most checks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DsmDaemon


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adversarial")


@pytest.fixture(scope="module")
def dsm(work: Path) -> Iterator[DsmDaemon]:
    (work / "daemon").mkdir()
    daemon = DsmDaemon(work / "daemon").start()
    try:
        yield daemon
    finally:
        daemon.cleanup()
