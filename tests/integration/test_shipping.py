"""The installed product is the product only: no demo, sample builders or fault injection."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_no_demo_samples_or_test_hooks(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*command, str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("dsm_tr181-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert any(name == "dsm_tr181/daemon.py" for name in modules)
    assert all(name.startswith("dsm_tr181/") for name in modules), [
        n for n in modules if not n.startswith("dsm_tr181/")
    ]
    for absent in ("demo", "sample_bundle", "sample_image", "fault_injection"):
        assert not any(Path(name).stem == absent for name in modules), absent
    with zipfile.ZipFile(wheel) as archive:
        product = "".join(archive.read(name).decode() for name in modules)
    for hook in ("DSM_CRASH_AT", "DSM_RAISE_AT", "os.kill(os.getpid()"):
        assert hook not in product, hook
