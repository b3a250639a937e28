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

A controller is what makes the agent send Notify messages: its factory-reset file names one
(``proto::dsm-test-controller``) reached over MQTT through a real broker (Debian's
``mosquitto``, or ``DSM_MOSQUITTO``) on a free 127.0.0.1 port, with subscriptions to
``DUStateChange!``, OperationComplete and the tables' ObjectCreation/ObjectDeletion. Nobody
reads the controller's topic: the test reads each Notify the agent sent from the trace
(``notifications()``), decoded by obuspa itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import DsmDaemon
from tests.support.dbusdaemon import read_ready_line
from tests.support.httpserver import free_port
from tests.support.processes import stop_process
from tests.support.rtrouted import RbusTools, find_tools

ENV = "DSM_OBUSPA"
MOSQUITTO_ENV = "DSM_MOSQUITTO"
CONTROLLER = "proto::dsm-test-controller"
REBOOT_REASON = "Device.DeviceInfo.X_RDKCENTRAL-COM_LastRebootReason"
REPO = Path(__file__).resolve().parents[2]
SM = "Device.SoftwareModules."


@dataclass(frozen=True)
class AgentTools:
    agent: Path
    mosquitto: Path
    rbus: RbusTools


def find_agent() -> AgentTools | str:
    """The agent, the MQTT broker and the rbus tools, or why the USP agent tests cannot run."""
    agent = os.environ.get(ENV, "")
    if not agent:
        return f"{ENV} is not set (obuspa built with usp-pa-vendor-rdk, INCLUDE_LCM_DATAMODEL)"
    if not os.access(agent, os.X_OK):
        return f"{ENV}={agent} is not an executable"
    mosquitto = os.environ.get(MOSQUITTO_ENV) or shutil.which("mosquitto")
    if not mosquitto:
        return f"no MQTT broker for the agent's Notify messages: install mosquitto or set {MOSQUITTO_ENV}"
    tools = find_tools()
    if isinstance(tools, str):
        return tools
    for tool in ("unshare", "nsenter", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if os.geteuid() != 0:
        return "the private mount namespace needs root"
    return AgentTools(Path(agent), Path(mosquitto), tools)


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

    def notifications(self) -> list[Notify]:
        """Every Notify the agent sent to the controller so far, from its protocol trace."""
        return parse_notifications(self.trace())

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


@dataclass(frozen=True)
class Notify:
    """One Notify message as obuspa's protocol trace prints it."""

    kind: str  # event, oper_complete, obj_creation, obj_deletion
    subscription: str
    path: str  # obj_path: the object (``Device.SoftwareModules.``, ``…DeploymentUnit.1.``)
    name: str  # event_name / command_name ("" for the object notifications)
    args: dict[str, str]  # event params / OperationComplete output args
    failure: tuple[int, str] | None = None  # OperationComplete's cmd_failure (err_code, err_msg)


_NOTIFY = re.compile(r'^header \{\n  msg_id: "[^"]*"\n  msg_type: NOTIFY\n\}\nbody \{\n(?P<body>.*?)^\}$', re.M | re.S)
_KIND = re.compile(r"^      (?P<kind>event|oper_complete|obj_creation|obj_deletion) \{$", re.M)
_FIELD = re.compile(
    r'^ +(?P<field>subscription_id|obj_path|event_name|command_name|err_msg): "(?P<value>(?:[^"\\]|\\.)*)"$', re.M
)
_ERR_CODE = re.compile(r"^ +err_code: (\d+)$", re.M)
# params/output_args: key then value; obuspa prints no value line for an empty string
_ARG = re.compile(r'^ +key: "(?P<key>(?:[^"\\]|\\.)*)"\n(?: +value: "(?P<value>(?:[^"\\]|\\.)*)"\n)?', re.M)


def parse_notifications(trace: str) -> list[Notify]:
    """The Notify messages in an obuspa protocol trace (``-p``), in the order they were sent."""
    found = []
    for message in _NOTIFY.finditer(trace):
        body = message["body"]
        kind = _KIND.search(body)
        if kind is None:  # a notification type the tests do not subscribe to
            continue
        fields = {m["field"]: _unescape(m["value"]) for m in _FIELD.finditer(body)}
        code = _ERR_CODE.search(body)
        found.append(Notify(
            kind=kind["kind"],
            subscription=fields.get("subscription_id", ""),
            path=fields.get("obj_path", ""),
            name=fields.get("event_name") or fields.get("command_name", ""),
            args={_unescape(m["key"]): _unescape(m["value"] or "") for m in _ARG.finditer(body)},
            failure=(int(code[1]), fields.get("err_msg", "")) if code else None,
        ))  # fmt: skip
    return found


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


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
    work: Path, found: AgentTools, component: str = "dsm-tr181", start_agent: bool = True
) -> Iterator[UspStack]:
    """rtrouted, an MQTT broker, a PandM stand-in, dsm (runc ExecEnv, rbus) and the agent, in a namespace."""
    work.mkdir(parents=True, exist_ok=True)
    tools = found.rbus
    mqtt_port = free_port()
    (work / "factory_reset.txt").write_text(_factory_reset(mqtt_port))
    (work / "mosquitto.conf").write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
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
        processes["mosquitto"] = namespace.popen([str(found.mosquitto), "-c", str(work / "mosquitto.conf")],
                                                 work / "mosquitto.log", tools.env())  # fmt: skip
        _until(lambda: _listening(mqtt_port), 10, "mosquitto's port", processes["mosquitto"])
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
        stack_ = UspStack(work, found.agent, tools, namespace, dsm, processes)
        if start_agent:
            stack_.start_agent()
        yield stack_


def _factory_reset(mqtt_port: int) -> str:
    """The agent's factory-reset database: its endpoint, an MQTT controller and what it subscribes to."""
    controller = "Device.LocalAgent.Controller.1."
    subscriptions = [
        ("Event", f"{SM}DUStateChange!"),
        ("OperationComplete", SM),
        ("ObjectCreation", f"{SM}DeploymentUnit.,{SM}ExecutionUnit."),
        ("ObjectDeletion", f"{SM}DeploymentUnit.,{SM}ExecutionUnit."),
    ]
    lines = [
        'Device.LocalAgent.EndpointID "proto::dsm-test-agent"',
        'Device.MQTT.Client.1.Alias "cpe-1"',
        "Device.MQTT.Client.1.Enable true",
        'Device.MQTT.Client.1.BrokerAddress "127.0.0.1"',
        f'Device.MQTT.Client.1.BrokerPort "{mqtt_port}"',
        'Device.MQTT.Client.1.ProtocolVersion "5.0"',
        'Device.MQTT.Client.1.TransportProtocol "TCP/IP"',
        'Device.MQTT.Client.1.ConnectRetryTime "1"',
        'Device.LocalAgent.MTP.1.Alias "cpe-1"',
        "Device.LocalAgent.MTP.1.Enable true",
        'Device.LocalAgent.MTP.1.Protocol "MQTT"',
        'Device.LocalAgent.MTP.1.MQTT.Reference "Device.MQTT.Client.1"',
        'Device.LocalAgent.MTP.1.MQTT.ResponseTopicConfigured "/usp/agent"',
        f'{controller}Alias "cpe-1"',
        f"{controller}Enable true",
        f'{controller}EndpointID "{CONTROLLER}"',
        f'{controller}AssignedRole "Device.LocalAgent.ControllerTrust.Role.1"',
        f'{controller}MTP.1.Alias "cpe-1"',
        f"{controller}MTP.1.Enable true",
        f'{controller}MTP.1.Protocol "MQTT"',
        f'{controller}MTP.1.MQTT.Reference "Device.MQTT.Client.1"',
        f'{controller}MTP.1.MQTT.Topic "/usp/controller"',
    ]
    for number, (kind, paths) in enumerate(subscriptions, 1):
        subscription = f"Device.LocalAgent.Subscription.{number}."
        lines += [
            f'{subscription}Alias "cpe-{number}"',
            f"{subscription}Enable true",
            f"{subscription}Persistent true",  # else deleted when the agent starts
            f'{subscription}ID "dsm-{number}"',
            f'{subscription}Recipient "{controller[:-1]}"',
            f'{subscription}NotifType "{kind}"',
            f'{subscription}ReferenceList "{paths}"',
        ]
    return "\n".join(lines) + "\n"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _with_rbus(config: Path) -> Path:
    """The DsmDaemon config with the rbus bus on (it is written with buses = ["none"])."""
    config.write_text(config.read_text().replace('buses = ["none"]', 'buses = ["rbus"]'))
    return config
