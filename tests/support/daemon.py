"""The real ``dsm`` daemon in a test: its own state directory, config and socket.

``DsmDaemon(tmp_path, **config)`` writes a TOML config, starts ``python -m dsm_tr181.daemon``
and waits for its systemd readiness message (``READY=1`` on a NOTIFY_SOCKET the test
owns) — no sleeping. ``stop()`` is SIGTERM → wait → SIGKILL of its own PID; ``kill9()``
simulates a crash. ``cleanup()`` removes every container left in its runc root.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsm_tr181.control_client import ControlClient
from tests.support.processes import delete_runc_containers, runc_containers, stop_process

READY_TIMEOUT = 30.0


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]], execenvs: list[Mapping[str, Any]]) -> Path:
    lines: list[str] = []
    for name, section in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in section.items()]
    for execenv in execenvs:
        lines.append("[[execenv]]")
        lines += [f"{key} = {_toml(value)}" for key, value in execenv.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


REPO = Path(__file__).resolve().parents[2]  # the daemon imports tests.support from here


class DsmDaemon:
    def __init__(
        self,
        work: Path,
        lcm: Mapping[str, Any] | None = None,
        execenvs: list[Mapping[str, Any]] | None = None,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        buses: Sequence[str] = ("none",),
    ) -> None:
        self.work = work
        self.state = work / "state"
        self.socket = work / "dsm.sock"
        self.log_path = work / "daemon.log"
        self.runc_root = self.runc_root_of("default")
        sections: dict[str, Mapping[str, Any]] = {
            **(extra or {}),
            "daemon": {"state_dir": str(self.state), "socket": str(self.socket), "buses": list(buses),
                       "log_level": "debug", **(extra or {}).get("daemon", {})},
            "lcm": {"usage_interval": 1.0, **(lcm or {})},
        }  # fmt: skip
        self.config = write_config(work / "dsm.toml", sections, execenvs or [{"name": "default"}])
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()) -> DsmDaemon:
        """``prefix``: a command to run the daemon through (e.g. nsenter into a namespace)."""
        notify_path = self.work / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        environment = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(notify_path)}
        environment.pop("DSM_CONFIG_FILE", None)
        # Fault injection (DSM_CRASH_AT / DSM_RAISE_AT) lives in the test harness, not the product.
        injecting = any(environment.get(name) for name in ("DSM_CRASH_AT", "DSM_RAISE_AT"))
        module = "tests.support.fault_injection" if injecting else "dsm_tr181.daemon"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", module, "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=REPO,
            )
        try:
            self._wait_ready(notify)
        finally:
            notify.close()
        return self

    def _wait_ready(self, notify: socket.socket) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dsm exited with {self.process.returncode} before it was ready:\n{self.log()}")
            notify.settimeout(0.2)
            try:
                message = notify.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                return
        raise RuntimeError(f"dsm was not ready within {READY_TIMEOUT} s:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=15)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)

    def cleanup(self) -> None:
        """Stop the daemon and remove every container it left (they outlive the daemon)."""
        self.stop()
        for root in self.state.glob("execenvs/*/oci-runc/root"):
            delete_runc_containers(root)

    def runc_root_of(self, execenv: str) -> Path:
        """The runc state root of an ExecEnv (each ExecEnv has its own runtime)."""
        return self.state / "execenvs" / execenv / "oci-runc" / "root"

    # -- talking to it ------------------------------------------------------------------------------

    def client(self, timeout: float | None = 60.0) -> ControlClient:
        return ControlClient(str(self.socket), timeout)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.client().call(method, params or {})

    def get(self, *paths: str) -> dict[str, str]:
        return dict(self.call("get", {"paths": list(paths)}))

    def events(self, prefix: str = "") -> EventStream:
        """Subscribe now (the control socket's ``events`` stream); the stream ends when
        the daemon stops."""
        return EventStream(self.client(timeout=None), prefix)

    def containers(self) -> list[str]:
        return runc_containers(self.runc_root)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class EventStream:
    """Notifications read by a background thread, consumed with :meth:`wait_for`."""

    def __init__(self, client: ControlClient, prefix: str) -> None:
        self._queue: queue.Queue[Mapping[str, Any] | BaseException] = queue.Queue()
        subscribed = threading.Event()
        stream = client.events(prefix, on_subscribed=subscribed.set)

        def pump() -> None:
            try:
                for event in stream:
                    self._queue.put(event)
            except BaseException as exc:  # the reader thread hands any failure to the test
                self._queue.put(exc)

        threading.Thread(target=pump, daemon=True, name="dsm-events").start()
        if not subscribed.wait(10):
            raise RuntimeError("the daemon did not acknowledge the events subscription")
        self.seen: list[Mapping[str, Any]] = []

    def wait_for(self, predicate: Callable[[Mapping[str, Any]], bool], timeout: float = 30.0) -> Mapping[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout} s; seen: {self.seen}")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            self.seen.append(item)
            if predicate(item):
                return item

    def du_state_change(self, operation: str, timeout: float = 60.0) -> Mapping[str, Any]:
        """The next DUStateChange! event of ``operation`` (Install, Update, Uninstall): its args."""
        event = self.wait_for(
            lambda e: e.get("path", "").endswith("DUStateChange!") and e["args"]["OperationPerformed"] == operation,
            timeout,
        )
        return event["args"]
