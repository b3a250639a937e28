"""A private ``dbus-daemon`` for one test, and client calls against it from other processes.

Usage::

    with private_bus() as bus:            # skip the test first where dbus-daemon is missing
        run_service(env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        print(gdbus_call(bus.address, "org.example", "/org/example", "org.example.Iface.Method", "int32 3"))

The daemon gets its own configuration in a fresh temporary directory: a session-bus-like
policy that allows everything (any connection may own any name and call anything) and a
single ``<listen>unix:path=...</listen>``. Readiness is the address it prints with
``--print-address``; nothing sleeps. On exit it is stopped by terminate → wait → kill of
its own PID, and the directory is removed. Its stderr is inherited (pytest captures it).

``gdbus_call`` runs ``gdbus call`` in a separate process: arguments are GVariant text, so a
service without introspection data (like Dobby) is called with explicit types, e.g.
``"int32 7"``, ``"@ah []"``.
"""

from __future__ import annotations

import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop_process

DBUS_DAEMON = "dbus-daemon"
GDBUS = "gdbus"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass(frozen=True)
class PrivateBus:
    """A running private bus: its client address, daemon PID and working directory."""

    address: str
    pid: int
    directory: Path


@contextmanager
def private_bus(ready_timeout: float = 10.0) -> Iterator[PrivateBus]:
    """Start a private ``dbus-daemon``, yield it, and stop it however the block ends."""
    # The socket path must stay below the 108-byte sun_path limit, so use a short /tmp dir
    # rather than pytest's deep tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="dbus-"))
    config = directory / "bus.conf"
    config.write_text(_CONFIG.format(socket=directory / "bus"))
    daemon = subprocess.Popen(
        [DBUS_DAEMON, "--nofork", "--nopidfile", f"--config-file={config}", "--print-address=1"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        address = read_ready_line(daemon, ready_timeout)
        yield PrivateBus(address=address, pid=daemon.pid, directory=directory)
    finally:
        stop_process(daemon)
        shutil.rmtree(directory, ignore_errors=True)


def read_ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line ``process`` writes to its stdout pipe; if it exits or stays silent for
    ``timeout`` seconds, stop it and raise RuntimeError (its stderr, inherited, tells why)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = process.stdout.readline().strip()
            if line:
                return line
    stop_process(process)
    raise RuntimeError(f"{process.args[0]} did not become ready within {timeout} s (exit status {process.returncode})")


def gdbus_call(address: str, dest: str, object_path: str, method: str, *args: str, timeout: int = 5) -> str:
    """Run ``gdbus call`` against ``address`` in a separate process; return its stdout.

    ``method`` is ``interface.Method``; each of ``args`` is one GVariant text argument.
    Raises subprocess.CalledProcessError (with stderr) when the call fails.
    """
    command = [
        GDBUS, "call", "--address", address, "--dest", dest, "--object-path", object_path,
        "--method", method, "--timeout", str(timeout), *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 5, check=True)
    return done.stdout.strip()
