r"""The rbus broker (``rtrouted``) for tests, and ``rbuscli`` runs against it.

Usage::

    tools = find_tools()                  # a RbusTools, or the reason to skip
    with running_broker(tools):
        result = run_rbuscli(tools, "get", "Device.Test.Name")
        assert result.values() == {"Device.Test.Name": "hello"}
        with InteractiveCli(tools) as cli:    # subscriptions live only in interactive mode
            cli.send("sub Device.Test.Changed!")
            cli.expect(r"Event received Device\.Test\.Changed!", timeout=10)

Where the tools are comes from the environment: ``DSM_RBUS_LIBRARY`` (librbus.so.0),
``DSM_RTROUTED`` and optionally ``DSM_RBUSCLI`` (default: ``rbuscli`` beside rtrouted).
Their directory of libraries goes on ``LD_LIBRARY_PATH`` of every process started here,
since an rbus install may carry no RUNPATH.

rbus's address is fixed (``unix:///tmp/rtrouted``), so there is one broker per machine:
an flock on ``/tmp/dsm-rtrouted.lock`` serializes test runs, and a broker this module did
not start (rtrouted holds an flock on ``/tmp/rtrouted.pid`` while it runs) is reported,
never reused or stopped. A stale socket left by a dead broker is removed before the start
(rtrouted would otherwise listen on nothing). Readiness is the socket accepting a
connection; the broker is stopped by terminate → wait → kill of its own PID.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.processes import stop_process

SOCKET = Path("/tmp/rtrouted")
BROKER_PIDFILE = Path("/tmp/rtrouted.pid")
LOCK = Path("/tmp/dsm-rtrouted.lock")


@dataclass(frozen=True)
class RbusTools:
    library: Path
    rtrouted: Path
    rbuscli: Path | None

    def env(self) -> dict[str, str]:
        """The environment for an rbus process: ours plus the library directory."""
        env = dict(os.environ)
        paths = [str(self.library.parent), *filter(None, env.get("LD_LIBRARY_PATH", "").split(":"))]
        env["LD_LIBRARY_PATH"] = ":".join(paths)
        return env


def find_tools() -> RbusTools | str:
    """The rbus tools named by the environment, or why the rbus tests cannot run."""
    library, rtrouted = os.environ.get("DSM_RBUS_LIBRARY"), os.environ.get("DSM_RTROUTED")
    if not library or not rtrouted:
        return "rbus tests need DSM_RBUS_LIBRARY (path to librbus.so.0) and DSM_RTROUTED (path to rtrouted)"
    for variable, path in (("DSM_RBUS_LIBRARY", library), ("DSM_RTROUTED", rtrouted)):
        if not Path(path).is_file():
            return f"{variable}={path} does not exist"
    cli = Path(os.environ.get("DSM_RBUSCLI") or Path(rtrouted).with_name("rbuscli"))
    return RbusTools(Path(library), Path(rtrouted), cli if cli.is_file() else None)


class BrokerUnavailable(RuntimeError):
    """The broker failed to start."""


class BrokerBusy(BrokerUnavailable):
    """Another broker runs, or another test run keeps the broker lock."""


@dataclass(frozen=True)
class Broker:
    pid: int
    log: Path


@contextmanager
def running_broker(tools: RbusTools, ready_timeout: float = 10.0, lock_timeout: float = 300.0) -> Iterator[Broker]:
    """Start rtrouted, yield it, and stop it however the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="rtrouted-"))
    try:
        with _exclusive(LOCK, lock_timeout):
            if _held(BROKER_PIDFILE):
                raise BrokerBusy(f"an rtrouted not started by these tests runs (it locks {BROKER_PIDFILE})")
            SOCKET.unlink(missing_ok=True)
            log = workdir / "rtrouted.log"
            with log.open("w") as output:
                broker = subprocess.Popen(
                    [str(tools.rtrouted), "-f", "-l", "WARN"],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=tools.env(),
                    cwd=workdir,
                )
            try:
                _wait_listening(broker, log, ready_timeout)
                yield Broker(broker.pid, log)
            finally:
                stop_process(broker)
                SOCKET.unlink(missing_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def no_broker(lock_timeout: float = 5.0) -> Iterator[None]:
    """Make sure no broker runs for the block (to test what clients do without one)."""
    with _exclusive(LOCK, lock_timeout):
        if _held(BROKER_PIDFILE):
            raise BrokerBusy(f"an rtrouted not started by these tests runs (it locks {BROKER_PIDFILE})")
        SOCKET.unlink(missing_ok=True)
        yield


@contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise BrokerBusy(f"{path} stayed locked by another test run for {timeout} s")
            time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _held(path: Path) -> bool:
    """Whether some process holds an flock on ``path`` (a running rtrouted does on its pid file)."""
    if not path.exists():
        return False
    with path.open("a") as handle:
        if not _try_lock(handle):
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _wait_listening(broker: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise BrokerUnavailable(f"rtrouted exited with {broker.returncode}: {log.read_text().strip()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(SOCKET))
                return
            except OSError:
                pass
        time.sleep(0.02)
    stop_process(broker)
    raise BrokerUnavailable(f"rtrouted did not listen on {SOCKET} within {timeout} s: {log.read_text().strip()}")


# ---- rbuscli ----

_PARAMETER = re.compile(
    r"""^Parameter \s+ \d+: \s*
        Name  \s* : \s* (?P<name>.*?)  \s* \n \s*
        Type  \s* : \s* (?P<type>.*?)  \s* \n \s*
        Value \s* : [ \t]? (?P<value>.*?) \r?$""",
    re.MULTILINE | re.VERBOSE,
)
_FAILURES = (
    re.compile(r"Failed to get the data\. Error : (?P<code>\d+)"),
    re.compile(r"setvalues failed with return value: (?P<code>\d+)"),
    # a failed method prints the error object: error_code's value follows it
    re.compile(r"failed for \S+ with err: .*?name=error_code\s+rbusValue type:RBUS_INT32 value:(?P<code>-?\d+)", re.S),
)


@dataclass(frozen=True)
class CliParameter:
    name: str
    type: str
    value: str


@dataclass(frozen=True)
class CliResult:
    """What one rbuscli run printed. rbuscli always exits 0: failures are read from the text."""

    text: str
    parameters: list[CliParameter] = field(default_factory=list)
    error: int | None = None

    def values(self) -> dict[str, str]:
        return {parameter.name: parameter.value for parameter in self.parameters}


_DUMPED_PROPERTY = re.compile(
    r"rbusProperty name=(?P<name>\S*)\s+rbusValue type:(?P<type>\S+) value:(?P<value>.*?)\r?$", re.M
)


def parse_object_dump(text: str) -> dict[str, str]:
    """``{name: value}`` of the properties in an rbusObject_fwrite dump (events, method errors)."""
    return {m["name"]: m["value"] for m in _DUMPED_PROPERTY.finditer(text)}


def parse_rbuscli(text: str) -> CliResult:
    """The parameters and the rbus error code (if any) in rbuscli's output."""
    parameters = [CliParameter(m["name"], m["type"], m["value"]) for m in _PARAMETER.finditer(text)]
    error = next((int(m["code"]) for pattern in _FAILURES if (m := pattern.search(text))), None)
    return CliResult(text, parameters, error)


def run_rbuscli(tools: RbusTools, *args: str, timeout: float = 30.0) -> CliResult:
    """Run one non-interactive rbuscli command in its own process and parse what it printed."""
    if tools.rbuscli is None:
        raise FileNotFoundError("no rbuscli: set DSM_RBUSCLI or put rbuscli beside rtrouted")
    done = subprocess.run(
        [str(tools.rbuscli), *args], env=tools.env(), capture_output=True, text=True, timeout=timeout, check=True
    )
    return parse_rbuscli(done.stdout + done.stderr)


class InteractiveCli:
    """``rbuscli -i`` in its own process, fed through stdin.

    Its stdout is made line-buffered with coreutils' ``stdbuf`` so that what it prints
    (events above all) can be awaited while it runs.
    """

    def __init__(self, tools: RbusTools) -> None:
        stdbuf = shutil.which("stdbuf")
        if tools.rbuscli is None or stdbuf is None:
            raise FileNotFoundError("interactive rbuscli needs rbuscli and stdbuf")
        self._process = subprocess.Popen(
            [stdbuf, "-oL", str(tools.rbuscli), "-i"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=tools.env(),
        )
        self._selector = selectors.DefaultSelector()
        assert self._process.stdout is not None
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        self._text = ""
        self._seen = 0  # expect() searches only what it has not matched yet

    def __enter__(self) -> InteractiveCli:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")
        self._process.stdin.flush()

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the output not yet matched contains ``pattern``; return the match."""
        regex = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while (found := regex.search(self._text, self._seen)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(f"rbuscli -i never printed {pattern!r}; it printed:\n{self._text}")
        self._seen = found.end()
        return found

    def _read(self, timeout: float) -> bool:
        """Append what rbuscli printed within ``timeout``; False at end of output or timeout."""
        assert self._process.stdout is not None
        if not self._selector.select(timeout):
            return False
        chunk = os.read(self._process.stdout.fileno(), 65536)
        self._text += chunk.decode(errors="replace")
        return bool(chunk)

    def close(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self.send("quit")
            self._process.stdin.close()
            self._process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self._process)
        self._selector.close()
