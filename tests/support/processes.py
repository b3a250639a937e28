"""Stopping the helper processes tests start (brokers, bus daemons, stand-in services)."""

from __future__ import annotations

import subprocess


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
