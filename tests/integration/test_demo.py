"""The README demo runs: daemon with defaults, a busybox DU installed and started, the tree printed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static"),
]


def test_demo_installs_runs_prints_and_cleans_up(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dsm_tr181.demo", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k != "DSM_CONFIG_FILE"},
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "dsm is ready" in out
    assert "DUStateChange.CurrentState = Installed" in out
    assert "hello from busybox" in out
    assert "confinement.mode = default" in out and "confinement.no_new_privileges = true" in out
    assert "Device.SoftwareModules.ExecutionUnit.1.Status = Active" in out
    assert "Device.SoftwareModules.DeploymentUnit.1.Status = Installed" in out
    assert out.rstrip().endswith("demo done: dsm stopped")
    state = tmp_path / "demo" / "state"
    assert list((state / "bundles").iterdir()) == [] and list((state / "logs").iterdir()) == []
    root = state / "execenvs" / "default" / "oci-runc" / "root"
    assert root.is_dir()
    listed = subprocess.run(["runc", "--root", str(root), "list", "-q"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert listed.stdout.split() == []
