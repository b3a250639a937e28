"""The real DobbyDaemon for a test (``-m dobby_real``), when ``DSM_DOBBY_DAEMON`` names one.

Dobby is in no package registry: build it from rdkcentral/Dobby and point
``DSM_DOBBY_DAEMON`` at ``<prefix>/sbin/DobbyDaemon``. It runs

* in a private mount namespace (``unshare --mount``) where cgroup2 is unmounted from
  ``/sys/fs/cgroup/unified``: with a pure cgroup-v1 layout crun does not try to raise
  RLIMIT_MEMLOCK, which it cannot do here;
* with ``/run/rdk`` (crun's state, ``--root /var/run/rdk/crun``) bound to a directory of the
  test, so nothing of the host's is seen or touched and a second instance sees what a
  killed one left;
* with Dobby's companions at the absolute paths it hard-codes (``/usr/bin/DobbyPluginLauncher``,
  ``/usr/libexec/DobbyInit``, ``/usr/lib/plugins/dobby``): when they are missing, an overlay on
  ``/usr``, private to the namespace, takes them from DobbyDaemon's install prefix;
* on a private bus, through ``DBUS_SYSTEM_BUS_ADDRESS`` (its ``--dbus-address`` drops calls).

:func:`running_dobby` yields the process (its pid is Dobby's: the shell execs it) once
``org.rdk.dobby`` answers ``Ping``, and stops it — then removes any container it left —
however the block ends.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.dbusdaemon import gdbus_call
from tests.support.processes import stop_process

ENV = "DSM_DOBBY_DAEMON"
CGROUP2 = Path("/sys/fs/cgroup/unified")


def dobby_daemon() -> Path | None:
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def missing() -> str:
    """Why the real Dobby cannot run here ("" when it can)."""
    daemon = dobby_daemon()
    if daemon is None:
        return f"{ENV} is not set (path to a DobbyDaemon built from rdkcentral/Dobby)"
    if not os.access(daemon, os.X_OK):
        return f"{ENV}={daemon} is not an executable"
    for tool in ("unshare", "crun", "gdbus", "dbus-daemon"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if os.geteuid() != 0:
        return "DobbyDaemon runs as root"
    return ""


def _setup(work_dir: Path) -> str:
    """Shell lines preparing the private mount namespace."""
    daemon = dobby_daemon()
    assert daemon is not None
    prefix = daemon.resolve().parent.parent
    run = work_dir / "run-rdk"
    lines = [
        "set -e",
        f"if mountpoint -q {CGROUP2}; then umount {CGROUP2}; fi",
        f"mkdir -p {run} /run/rdk && mount --bind {run} /run/rdk",
    ]
    companions = {
        prefix / "bin" / "DobbyPluginLauncher": "/usr/bin/DobbyPluginLauncher",
        prefix / "libexec" / "DobbyInit": "/usr/libexec/DobbyInit",
        prefix / "lib" / "plugins" / "dobby": "/usr/lib/plugins/dobby",
    }
    absent = {source: target for source, target in companions.items() if not Path(target).exists()}
    if absent:
        upper, scratch = work_dir / "usr-upper", work_dir / "usr-work"
        lines.append(f"mkdir -p {upper} {scratch}")
        lines.append(f"mount -t overlay overlay -o lowerdir=/usr,upperdir={upper},workdir={scratch} /usr")
        for source, target in absent.items():
            lines.append(f"mkdir -p {Path(target).parent} && cp -a {source} {target}")
    return "\n".join(lines)


@contextmanager
def running_dobby(address: str, work_dir: Path, ready_timeout: float = 15.0) -> Iterator[subprocess.Popen[bytes]]:
    daemon = dobby_daemon()
    assert daemon is not None, missing()
    work_dir.mkdir(parents=True, exist_ok=True)
    script = f"{_setup(work_dir)}\nexec {shlex.quote(str(daemon))} --nofork --noconsole"
    log = (work_dir / "dobby.log").open("ab")
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address},
    )
    log.close()
    try:
        _wait_ready(process, address, ready_timeout)
        yield process
    finally:
        stop_process(process, grace=10)
        remove_leftovers(work_dir)


def _wait_ready(process: subprocess.Popen[bytes], address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"DobbyDaemon exited with {process.returncode} before it was ready")
        try:
            gdbus_call(address, "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.admin1.Ping", timeout=1)
            return
        except subprocess.CalledProcessError:
            time.sleep(delay)  # not on the bus yet
            delay = min(delay * 2, 0.5)
    stop_process(process)
    raise RuntimeError(f"DobbyDaemon did not answer Ping within {timeout} s")


def leftovers(work_dir: Path) -> list[str]:
    """Containers in the crun state a (killed) Dobby left in ``work_dir``."""
    root = work_dir / "run-rdk" / "crun"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def remove_leftovers(work_dir: Path) -> None:
    """Force-delete what a killed Dobby left, with crun in the same kind of namespace."""
    ids = leftovers(work_dir)
    if not ids:
        return
    deletes = "\n".join(f"crun --root /run/rdk/crun delete --force {shlex.quote(i)} || true" for i in ids)
    script = f"{_setup(work_dir)}\n{deletes}"
    subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script], check=False)
