"""RDK's USP agent in front of the real dsm, on rbus, for ``-m usp_agent`` tests.

The agent is obuspa built with rdkcentral/usp-pa-vendor-rdk's vendor layer and
``INCLUDE_LCM_DATAMODEL`` (as RDK images build it), named by ``DSM_OBUSPA``; librbus and
rtrouted come from ``DSM_RBUS_LIBRARY`` / ``DSM_RTROUTED``. None is in a registry: build
them from their public sources.

rbus's broker address (``/tmp/rtrouted``) is machine-wide, so everything runs in a private
mount namespace with its own ``/tmp`` (a tmpfs), into which the test's work directory is
bound at the same path: the namespace is a ``sleep`` started by ``unshare``, and every
process of the stack joins it with ``nsenter``. The test itself stays outside and talks
to dsm through its control socket and to the agent with ``obuspa -s <socket> -c …`` (run in
the namespace: the CLI client opens rbus too). The agent runs with its protocol trace (``-p``) in ``obuspa.log``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import DsmDaemon
from tests.support.dbusdaemon import read_ready_line
from tests.support.processes import stop_process
from tests.support.rtrouted import RbusTools, find_tools

ENV = "DSM_OBUSPA"
REBOOT_REASON = "Device.DeviceInfo.X_RDKCENTRAL-COM_LastRebootReason"
REPO = Path(__file__).resolve().parents[2]


def find_agent() -> tuple[Path, RbusTools] | str:
    """The agent and rbus tools, or why the USP agent tests cannot run."""
    agent = os.environ.get(ENV, "")
    if not agent:
        return f"{ENV} is not set (obuspa built with usp-pa-vendor-rdk, INCLUDE_LCM_DATAMODEL)"
    if not os.access(agent, os.X_OK):
        return f"{ENV}={agent} is not an executable"
    tools = find_tools()
    if isinstance(tools, str):
        return tools
    for tool in ("unshare", "nsenter", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if os.geteuid() != 0:
        return "the private mount namespace needs root"
    return Path(agent), tools


class Namespace:
    """A private mount namespace with its own /tmp, ``work`` visible at its own path."""

    def __init__(self, work: Path) -> None:
        setup = "\n".join([
            "set -e",
            "mount -t tmpfs tmpfs /srv && mkdir /srv/work",
            f"mount --bind {work} /srv/work",
            "mount -t tmpfs tmpfs /tmp",
            f"mkdir -p {work} && mount --bind /srv/work {work}",
            "echo ready",
            "exec sleep infinity",
        ])  # fmt: skip
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", setup],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        read_ready_line(self._holder, 10)

    def prefix(self) -> list[str]:
        return ["nsenter", f"--target={self._holder.pid}", "--mount", f"--wd={REPO}", "--"]

    def path(self, inside: str) -> Path:
        """A path of the namespace, as seen from outside."""
        return Path(f"/proc/{self._holder.pid}/root{inside}")

    def popen(self, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                [*self.prefix(), *argv], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=dict(env), cwd=REPO,
            )  # fmt: skip

    def close(self) -> None:
        """Stop whatever still runs in the namespace (each by its pid), then the namespace."""
        namespace = os.readlink(f"/proc/{self._holder.pid}/ns/mnt")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self._holder.pid:
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:  # gone meanwhile
                continue
        stop_process(self._holder)


@dataclass
class UspStack:
    work: Path
    agent: Path
    tools: RbusTools
    namespace: Namespace
    dsm: DsmDaemon
    processes: dict[str, subprocess.Popen[bytes]]

    @property
    def cli_socket(self) -> Path:
        return self.work / "usp_cli"

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """``obuspa -c …`` against the running agent; what it printed."""
        done = subprocess.run(
            # in the namespace: the CLI client also opens rbus (3 s lost without a broker)
            [*self.namespace.prefix(), str(self.agent), "-s", str(self.cli_socket), "-c", *args],
            capture_output=True, text=True, timeout=timeout, env=self.tools.env(), check=False,
        )  # fmt: skip
        return done.stdout + done.stderr

    def trace(self) -> str:
        return (self.work / "obuspa.log").read_text(errors="replace")

    def start_agent(self, env: Mapping[str, str] | None = None, dm_files: bool = True) -> None:
        """(Re)start the agent; it is up when its CLI answers. ``dm_files``: give it
        integration/usp-pa/*.conf (else it discovers the model itself, then aborts or runs)."""
        if "agent" in self.processes:
            stop_process(self.processes.pop("agent"))
        argv = [str(self.agent), "-p", "-v", "3", "-r", str(self.work / "factory_reset.txt"),
                "-f", str(self.work / "usp.db"), "-s", str(self.cli_socket), "-i", "lo"]  # fmt: skip
        dm_dir = self.work / "usp-pa"  # the data-model files shipped in integration/usp-pa/
        shutil.rmtree(dm_dir, ignore_errors=True)
        dm_dir.mkdir()
        if dm_files:
            for conf in ("usp_dm_objs.conf", "usp_dm_params.conf"):
                shutil.copy(REPO / "integration" / "usp-pa" / conf, dm_dir / conf)
            # On a device the files also list the other components' elements (PandM's here).
            with (dm_dir / "usp_dm_params.conf").open("a") as params:
                params.write(f"{REBOOT_REASON} STRING RO\n")  # obuspa registers the other two itself
        environment = {**self.tools.env(), "USP_PA_DM_DIR": str(dm_dir), **(env or {})}
        self.processes["agent"] = self.namespace.popen(argv, self.work / "obuspa.log", environment)
        _until(lambda: "Device.SoftwareModules.ExecEnvNumberOfEntries" in self.cli("get", "Device.SoftwareModules."),
               30, "the agent to serve Device.SoftwareModules.", self.processes["agent"])  # fmt: skip

    def restart_dsm(self) -> None:
        self.dsm.stop()
        self.dsm.start(prefix=self.namespace.prefix())


def _until(check: object, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if check():  # type: ignore[operator]
            return
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def usp_stack(
    work: Path, agent: Path, tools: RbusTools, component: str = "dsm-tr181", start_agent: bool = True
) -> Iterator[UspStack]:
    """rtrouted, a PandM stand-in, dsm (runc ExecEnv, rbus) and the agent, in a namespace."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "factory_reset.txt").write_text('Device.LocalAgent.EndpointID "proto::dsm-test-agent"\n')
    with ExitStack() as stack:
        namespace = Namespace(work)
        stack.callback(namespace.close)
        processes: dict[str, subprocess.Popen[bytes]] = {}

        def stop_all() -> None:
            for process in reversed(list(processes.values())):
                stop_process(process)

        stack.callback(stop_all)
        processes["rtrouted"] = namespace.popen([str(tools.rtrouted), "-f", "-l", "WARN"], work / "rtrouted.log",
                                                tools.env())  # fmt: skip
        _until(namespace.path("/tmp/rtrouted").exists, 10, "rtrouted's socket", processes["rtrouted"])
        pandm = subprocess.Popen(
            [*namespace.prefix(), sys.executable, "-m", "tests.support.deviceinfo_provider", str(tools.library)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=tools.env(), cwd=REPO,
        )  # fmt: skip
        processes["pandm"] = pandm  # type: ignore[assignment]
        read_ready_line(pandm, 15)  # type: ignore[arg-type]
        (work / "dsm").mkdir(exist_ok=True)
        dsm = DsmDaemon(
            work / "dsm",
            execenvs=[{"name": "default", "runtime": "runc"}],
            extra={"bus.rbus": {"library": str(tools.library), "skip": ["Device.DeviceInfo."], "component": component}},
        )
        dsm.config = _with_rbus(dsm.config)
        stack.callback(dsm.cleanup)
        dsm.start(env=tools.env(), prefix=namespace.prefix())
        stack_ = UspStack(work, agent, tools, namespace, dsm, processes)
        if start_agent:
            stack_.start_agent()
        yield stack_


def _with_rbus(config: Path) -> Path:
    """The DsmDaemon config with the rbus bus on (it is written with buses = ["none"])."""
    config.write_text(config.read_text().replace('buses = ["none"]', 'buses = ["rbus"]'))
    return config
