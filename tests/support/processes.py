"""Stopping the helper processes tests start (brokers, bus daemons, stand-in services), and
removing the runc containers they leave behind."""

from __future__ import annotations

import subprocess
from pathlib import Path


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 5.0) -> None:
    """Terminate ``process`` (its own PID only), wait, kill it if it lingers, close its stdout pipe."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def runc_containers(root: Path) -> list[str]:
    """The ids of the containers in the runc state directory ``root`` ([] when it does not exist)."""
    if not root.exists():
        return []
    listed = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=False)
    return listed.stdout.split()


def delete_runc_containers(root: Path) -> None:
    """Force-delete every container in the runc state directory ``root``."""
    for container in runc_containers(root):
        subprocess.run(["runc", "--root", str(root), "delete", "--force", container], capture_output=True, check=False)
