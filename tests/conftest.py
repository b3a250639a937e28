"""Fixtures shared across the unit and integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount); skipped where it cannot be had."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)]
    result = subprocess.run(mount, capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


LAYERS = ("unit", "integration", "conformance")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test says which layer it belongs to, so ``-m unit`` and friends select all of it."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(name) for name in LAYERS)]
    if unmarked:
        raise pytest.UsageError(f"tests without a {'/'.join(LAYERS)} marker: {', '.join(unmarked)}")
