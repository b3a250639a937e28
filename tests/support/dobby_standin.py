"""STAND-IN FOR DOBBY, for tests only: it is not Dobby and does not pretend to be complete.

It owns ``org.rdk.dobby`` on a (private) bus and answers Dobby's D-Bus API on
``/org/rdk/dobby`` the way DobbyDaemon does, running containers with real ``runc``
under its own ``--root``:

- ``admin1.Ping()``; ``admin1.Ready()`` is emitted once it serves;
- ``ctrl1.StartFromBundle`` as ``ssah`` or ``ssahssas`` → ``i`` (descriptor in 1..1024, or -1
  for a bad id, an id already running, a wrong signature or a failed start); the reply
  is sent after the container has been created and started;
- ``ctrl1.Stop(i, b)``, ``Pause(i)``, ``Resume(i)`` → ``b``; ``GetState(i)`` → ``i`` (0-7);
  ``GetInfo(i)`` → JSON ``s`` ("" if unknown); ``List()`` → ``(ai, as)``;
- signals ``Started(i, s)``, then on exit ``StoppedWithStatus(i, s, i waitStatus)`` followed
  by ``Stopped(i, s)``; the container is then forgotten, as Dobby does.

Like Dobby (checked against DobbyDaemon built from rdkcentral/Dobby) it publishes no
introspection data (Introspect gets an error), answers wrong argument types with the
failure value instead of a D-Bus error (``GetState`` with -1), reads
``DBUS_SYSTEM_BUS_ADDRESS`` when no ``--address`` is given, converts ``1.0.2-dobby``
bundles (original kept as ``config-dobby.json``, ``config.json`` rewritten as ``1.0.2``),
writes ``container.pid`` into the bundle, sets the hostname to the container id, reaps
containers as a child subreaper and reports exit codes 129..192 as deaths by signal.
As with Dobby (which hands ``config.json`` to crun), ``linux.resources`` become the limits of
the container's own cgroup, and without a ``cgroupsPath`` there is no parent of ours above it.
A graceful ``Stop`` sends SIGTERM and SIGKILL 0.5 s later, as Dobby does. ``GetInfo``
has Dobby's fields and types (integer pids, ``processes`` with integer ``pid``/``nsPid``,
``cpu.usage.total`` in ns, ``memory.user.*`` in bytes, a monotonic ``timestamp`` in ns).
At start it kills what a previous instance left in its runc root, as Dobby does, and
owns ``org.rdk.dobby`` 0.3 s before it serves (calls meanwhile get UnknownObject) and emits
``Ready``.
Of the RDK plugins it honours only ``logging`` with the ``file`` sink (the file is
truncated at each start) or ``devNull``; other output goes to /dev/null.

Where the real daemon crashes, the stand-in refuses and says why on stderr: a bundle
without ``linux.resources`` (Dobby's pids-limit code dereferences it) gets -1 from
``StartFromBundle``, and ``GetInfo`` of a container started without ``rdkPlugins``
(Dobby reads its plugin manager) gets "".

Not like Dobby: runc instead of crun, no plugins or hooks, the ``fileOptions.limit`` of
the logging plugin is not enforced, output reaches the log file through plain stdio
instead of a pty, fds passed in ``ah`` are closed instead of being handed to the
container, ``displaySocket`` is ignored, state changes are synchronous (no STOPPING),
and every other method gets ``org.freedesktop.DBus.Error.UnknownMethod``.

Run it as ``python -m tests.support.dobby_standin --address ADDR --work-dir DIR``; it
prints ``ready`` on stdout when it owns the name and cleans up its containers on
SIGTERM. :func:`running_standin` does that for a test.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from tests.support.dbusdaemon import read_ready_line
from tests.support.processes import delete_runc_containers, stop_process

SERVICE = "org.rdk.dobby"
OBJECT_PATH = "/org/rdk/dobby"
ADMIN = f"{SERVICE}.admin1"
CTRL = f"{SERVICE}.ctrl1"

STATE_INVALID, STATE_STARTING, STATE_RUNNING, STATE_STOPPING, STATE_PAUSED = range(5)
_STATE_NAMES = {STATE_STARTING: "starting", STATE_RUNNING: "running", STATE_PAUSED: "paused"}
_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PR_SET_CHILD_SUBREAPER = 36
KILL_AFTER_MS = 500  # Dobby's graceful Stop: SIGKILL this long after SIGTERM
STARTING_MS = 300  # between owning the name and serving (UnknownObject meanwhile), then Ready

Reply = GLib.Variant | None


@dataclass
class Container:
    descriptor: int
    id: str
    pid: int
    state: int
    has_plugins: bool = True


def valid_id(container_id: str) -> bool:
    """Dobby's container id rule: 1-128 of [A-Za-z0-9._-], a letter, no '..'."""
    return (
        _ID_PATTERN.fullmatch(container_id) is not None
        and any(c.isalpha() for c in container_id)
        and ".." not in container_id
    )


def wait_status_as_dobby_reports_it(status: int) -> int:
    """Dobby turns an exit code 128+N (N a signal) into a 'killed by signal N' status."""
    if os.WIFEXITED(status) and 128 < os.WEXITSTATUS(status) < 128 + signal.NSIG:
        sig = os.WEXITSTATUS(status) - 128
        core = 0x80 if sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGFPE, signal.SIGILL, signal.SIGBUS,
                               signal.SIGQUIT) else 0  # fmt: skip
        return sig | core
    return status


class DobbyStandIn:
    """The service: method calls and child exits are handled on the main GLib loop."""

    def __init__(self, connection: Gio.DBusConnection, work_dir: Path, production: bool = False) -> None:
        self._bus = connection
        self._root = work_dir / "runc"
        self._states = work_dir / "containers"
        self._containers: dict[int, Container] = {}
        self.serving = False  # until Ready
        self._methods: dict[tuple[str, str], Callable[[Gio.DBusMessage], Reply]] = {
            (ADMIN, "Ping"): lambda _m: None,
            (CTRL, "StartFromBundle"): self._start_from_bundle,
            (CTRL, "Stop"): self._stop,
            (CTRL, "Pause"): self._pause,
            (CTRL, "Resume"): self._resume,
            (CTRL, "GetState"): self._get_state,
            (CTRL, "GetInfo"): self._get_info,
            (CTRL, "List"): self._list,
        }
        if production:  # DOBBY_PROD builds do not register it: UnknownMethod
            del self._methods[(CTRL, "StartFromBundle")]

    # --- bus plumbing -------------------------------------------------------------------------

    def filter(self, _bus: Gio.DBusConnection, message: Gio.DBusMessage, incoming: bool) -> Gio.DBusMessage | None:
        """GDBus worker thread: take our method calls (so GDBus never introspects us) to the loop."""
        if (
            incoming
            and message.get_message_type() == Gio.DBusMessageType.METHOD_CALL
            and (message.get_path() == OBJECT_PATH)
        ):
            GLib.idle_add(self._dispatch, message)
            return None
        return message

    def _dispatch(self, message: Gio.DBusMessage) -> bool:
        handler = self._methods.get((message.get_interface() or "", message.get_member() or ""))
        if not self.serving:  # like DobbyDaemon between taking its name and serving
            reply = message.new_method_error_literal(
                "org.freedesktop.DBus.Error.UnknownObject", f"Unknown object '{OBJECT_PATH}'."
            )
        elif handler is None:
            reply = message.new_method_error_literal(
                "org.freedesktop.DBus.Error.UnknownMethod",
                f"no method {message.get_interface()}.{message.get_member()} here",
            )
        else:
            try:
                body = handler(message)
            except Exception as exc:  # a stand-in bug: say so instead of leaving the caller waiting
                reply = message.new_method_error_literal("org.freedesktop.DBus.Error.Failed", repr(exc))
            else:
                reply = message.new_method_reply()
                if body is not None:
                    reply.set_body(body)
        self._bus.send_message(reply, Gio.DBusSendMessageFlags.NONE)
        return GLib.SOURCE_REMOVE

    def announce_ready(self) -> None:
        self.serving = True
        self._emit(ADMIN, "Ready")

    def _emit(self, interface: str, member: str, body: GLib.Variant | None = None) -> None:
        self._bus.emit_signal(None, OBJECT_PATH, interface, member, body)

    @staticmethod
    def _args(message: Gio.DBusMessage, *signatures: str) -> tuple[Any, ...] | None:
        """The unpacked arguments if the call has one of ``signatures``, else None."""
        if message.get_signature() not in signatures:
            return None
        body = message.get_body()
        return tuple(body.unpack()) if body is not None else ()

    def _find(self, message: Gio.DBusMessage, signature: str = "i") -> tuple[Container | None, tuple[Any, ...]]:
        args = self._args(message, signature)
        if args is None:
            return None, ()
        return self._containers.get(args[0]), args

    # --- methods ------------------------------------------------------------------------------

    def _start_from_bundle(self, message: Gio.DBusMessage) -> GLib.Variant:
        args = self._args(message, "ssah", "ssahssas")
        fd_list = message.get_unix_fd_list()
        if fd_list is not None:
            for fd in fd_list.steal_fds():
                os.close(fd)
        if args is None or not valid_id(args[0]) or any(c.id == args[0] for c in self._containers.values()):
            return GLib.Variant("(i)", (-1,))
        container_id, bundle = args[0], Path(args[1])
        command, env = (args[3], args[5]) if len(args) == 6 else ("", [])
        crash = _would_crash_dobby(bundle)
        if crash:
            print(f"dobby stand-in: refusing {container_id!r}: {crash}", file=sys.stderr)
            return GLib.Variant("(i)", (-1,))
        try:
            container = self._create_and_start(container_id, bundle, command, env)
        except Exception as exc:  # whatever went wrong, Dobby answers -1
            print(f"dobby stand-in: cannot start {container_id!r}: {exc}", file=sys.stderr)
            self._runc("delete", "--force", container_id, check=False)
            return GLib.Variant("(i)", (-1,))
        self._containers[container.descriptor] = container
        threading.Thread(target=self._reap, args=(container.pid,), daemon=True).start()
        self._emit(CTRL, "Started", GLib.Variant("(is)", (container.descriptor, container.id)))
        return GLib.Variant("(i)", (container.descriptor,))

    def _stop(self, message: Gio.DBusMessage) -> GLib.Variant:
        container, args = self._find(message, "ib")
        if container is None:
            return GLib.Variant("(b)", (False,))
        force = args[1]
        if container.state == STATE_PAUSED:
            if not force:  # Dobby: a paused container must be resumed or force-stopped
                return GLib.Variant("(b)", (False,))
            self._runc("resume", container.id, check=False)
        done = self._runc("kill", container.id, "KILL" if force else "TERM", check=False)
        if not force and done.returncode == 0:
            # Dobby's graceful stop kills the container 0.5 s after its SIGTERM.
            GLib.timeout_add(KILL_AFTER_MS, self._kill_if_running, container.descriptor, container.pid)
        return GLib.Variant("(b)", (done.returncode == 0,))

    def _kill_if_running(self, descriptor: int, pid: int) -> bool:
        container = self._containers.get(descriptor)
        if container is not None and container.pid == pid:
            self._runc("kill", container.id, "KILL", check=False)
        return GLib.SOURCE_REMOVE

    def _pause(self, message: Gio.DBusMessage) -> GLib.Variant:
        return self._freeze(message, "pause", STATE_RUNNING, STATE_PAUSED)

    def _resume(self, message: Gio.DBusMessage) -> GLib.Variant:
        return self._freeze(message, "resume", STATE_PAUSED, STATE_RUNNING)

    def _freeze(self, message: Gio.DBusMessage, verb: str, before: int, after: int) -> GLib.Variant:
        container, _ = self._find(message)
        if container is None or container.state != before:
            return GLib.Variant("(b)", (False,))
        if self._runc(verb, container.id, check=False).returncode != 0:
            return GLib.Variant("(b)", (False,))
        container.state = after
        return GLib.Variant("(b)", (True,))

    def _get_state(self, message: Gio.DBusMessage) -> GLib.Variant:
        container, args = self._find(message)
        if not args:  # Dobby: "error getting the args" → -1
            return GLib.Variant("(i)", (-1,))
        return GLib.Variant("(i)", (container.state if container else STATE_INVALID,))

    def _get_info(self, message: Gio.DBusMessage) -> GLib.Variant:
        container, _ = self._find(message)
        if container is not None and not container.has_plugins:
            print(f"dobby stand-in: GetInfo of {container.id!r} refused: Dobby would crash "
                  "(no rdkPlugins, no plugin manager)", file=sys.stderr)  # fmt: skip
            return GLib.Variant("(s)", ("",))
        return GLib.Variant("(s)", (json.dumps(self._info(container)) if container else "",))

    def _list(self, _message: Gio.DBusMessage) -> GLib.Variant:
        entries = list(self._containers.values())
        return GLib.Variant("(aias)", ([c.descriptor for c in entries], [c.id for c in entries]))

    # --- containers ---------------------------------------------------------------------------

    def _create_and_start(self, container_id: str, bundle: Path, command: str, env: Sequence[str]) -> Container:
        config = _extended_config(bundle)
        has_plugins = bool(config.get("rdkPlugins"))
        workdir = self._states / container_id
        workdir.mkdir(parents=True, exist_ok=True)
        # runc runs a private copy of the config (absolute rootfs), as Dobby runs a custom
        # config when the start call overrides the command or the environment.
        config["ociVersion"] = "1.0.2"
        config["root"]["path"] = str((bundle / config["root"]["path"]).resolve())
        if command:
            config["process"]["args"] = shlex.split(command)
        config["process"]["env"] = [*config["process"].get("env", []), *env]
        config["process"]["terminal"] = False
        config["hostname"] = container_id  # as Dobby does
        (workdir / "config.json").write_text(json.dumps(config))
        pid_file = workdir / "container.pid"
        pid_file.unlink(missing_ok=True)
        with _log_sink(config) as output:
            self._runc("create", "--bundle", str(workdir), "--pid-file", str(pid_file), container_id, stdio=output)
        self._runc("start", container_id)
        pid = int(pid_file.read_text())
        (bundle / "container.pid").write_text(str(pid))  # Dobby writes it into the bundle
        return Container(_free_descriptor(self._containers), container_id, pid, STATE_RUNNING, has_plugins)

    def _reap(self, pid: int) -> None:
        """Reaper thread: wait for the container's init (ours as subreaper), then report."""
        _, status = os.waitpid(pid, 0)
        GLib.idle_add(self._on_exit, pid, status)

    def _on_exit(self, pid: int, status: int) -> bool:
        container = next((c for c in self._containers.values() if c.pid == pid), None)
        if container is not None:
            self._runc("delete", "--force", container.id, check=False)
            del self._containers[container.descriptor]
            reported = wait_status_as_dobby_reports_it(status)
            self._emit(CTRL, "StoppedWithStatus", GLib.Variant("(isi)", (container.descriptor, container.id, reported)))
            self._emit(CTRL, "Stopped", GLib.Variant("(is)", (container.descriptor, container.id)))
        return GLib.SOURCE_REMOVE

    def _info(self, container: Container) -> dict[str, Any]:
        """Dobby's GetInfo JSON (DobbyStats + id and state), with its types."""
        cgroups = _cgroup_dirs(container.pid)
        pids = _read_ints(cgroups.get("pids"), "cgroup.procs")
        memory = cgroups.get("memory")

        def memory_value(v1: str, v2: str) -> int | None:
            values = _read_ints(memory, v1) or _read_ints(memory, v2)
            return values[0] if values else None

        return {
            "pids": pids,
            "processes": [_process(p) for p in pids],
            "cpu": {"usage": {"total": _cpu_ns(cgroups.get("cpuacct")), "percpu": None}},
            "timestamp": time.monotonic_ns(),
            "memory": {
                "user": {
                    "limit": memory_value("memory.limit_in_bytes", "memory.max"),
                    "usage": memory_value("memory.usage_in_bytes", "memory.current"),
                    "max": memory_value("memory.max_usage_in_bytes", "memory.peak"),
                    "failcnt": memory_value("memory.failcnt", "memory.events.max"),
                }
            },
            "id": container.id,
            "state": _STATE_NAMES.get(container.state, "unknown"),
        }

    def _runc(
        self, *args: str, check: bool = True, stdio: int = subprocess.DEVNULL
    ) -> subprocess.CompletedProcess[bytes]:
        log = self._root / "runc.log"
        self._root.mkdir(parents=True, exist_ok=True)
        command = ["runc", "--root", str(self._root), "--log", str(log), *args]
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, check=check, timeout=30)

    def kill_leftovers(self) -> None:
        """At start, as Dobby does: kill and delete the containers a previous instance left."""
        if self._root.exists():
            delete_runc_containers(self._root)

    def shutdown(self) -> None:
        """Kill and delete every container (on SIGTERM)."""
        for container in list(self._containers.values()):
            self._runc("kill", container.id, "KILL", check=False)
            self._runc("delete", "--force", container.id, check=False)
        self._containers.clear()


def _extended_config(bundle: Path) -> dict[str, Any]:
    """The bundle's config as its author wrote it, converting it in place as Dobby does."""
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("ociVersion") == "1.0.2-dobby":
        (bundle / "config-dobby.json").write_text(config_path.read_text())
        converted = dict(config, ociVersion="1.0.2")
        config_path.write_text(json.dumps(converted, indent=2))
    elif "rdkPlugins" in config and (bundle / "config-dobby.json").exists():
        config = json.loads((bundle / "config-dobby.json").read_text())
    return config


@contextmanager
def _log_sink(config: dict[str, Any]) -> Iterator[int]:
    """The fd the container's stdout/stderr go to, per the bundle's logging plugin."""
    data = config.get("rdkPlugins", {}).get("logging", {}).get("data", {})
    path = data.get("fileOptions", {}).get("path") if data.get("sink") == "file" else None
    fd = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def _would_crash_dobby(bundle: Path) -> str:
    """Why the real DobbyDaemon would crash on this bundle ("" if it would not)."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError):
        return ""  # Dobby refuses an unreadable bundle on its own
    if not isinstance((config.get("linux") or {}).get("resources"), dict):
        return "no linux.resources: DobbyDaemon's default pids limit dereferences it and crashes"
    return ""


def _free_descriptor(used: dict[int, Container]) -> int:
    return random.choice([d for d in range(1, 1025) if d not in used])


def _cgroup_dirs(pid: int) -> dict[str, Path]:
    """The pids, memory and cpuacct cgroup directories of ``pid`` (cgroup v1 or unified v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    entries = [line.split(":", 2) for line in lines]
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        unified = next((Path(f"/sys/fs/cgroup{path}") for _, controllers, path in entries if not controllers), None)
        return {"pids": unified, "memory": unified, "cpuacct": unified} if unified else {}
    found = {}
    for _, controllers, path in entries:
        for name in ("pids", "memory", "cpuacct"):
            if name in controllers.split(","):  # mounted alone or with its siblings (cpu,cpuacct)
                found[name] = Path(f"/sys/fs/cgroup/{name}{path}")
                if not found[name].exists():
                    found[name] = Path(f"/sys/fs/cgroup/{controllers}{path}")
    return found


def _cpu_ns(directory: Path | None) -> int | None:
    """Cumulative CPU time in ns: cpuacct.usage (v1) or cpu.stat usage_usec (v2)."""
    usage = _read_ints(directory, "cpuacct.usage")
    if usage:
        return usage[0]
    try:
        for line in (directory / "cpu.stat").read_text().splitlines() if directory else []:
            key, _, number = line.partition(" ")
            if key == "usage_usec":
                return int(number) * 1000
    except (OSError, ValueError):
        pass
    return None


def _process(pid: int) -> dict[str, Any]:
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        executable, cmdline = "", ""
    return {"pid": pid, "nsPid": _ns_pid(pid), "executable": executable, "cmdline": cmdline}


def _read_ints(directory: Path | None, name: str) -> list[int]:
    if directory is None:
        return []
    try:
        return [int(word) for word in (directory / name).read_text().split()]
    except (OSError, ValueError):
        return []


def _ns_pid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return -1


def serve(address: str, work_dir: Path, production: bool = False) -> int:
    """Own ``org.rdk.dobby`` on ``address`` and serve until SIGTERM/SIGINT."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    bus = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
    service = DobbyStandIn(bus, work_dir, production)
    service.kill_leftovers()
    bus.add_filter(service.filter)
    owned = bus.call_sync(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        GLib.Variant("(su)", (SERVICE, 4)), GLib.VariantType("(u)"), Gio.DBusCallFlags.NONE, 5000, None,
    ).unpack()[0]  # fmt: skip  # 4 = DO_NOT_QUEUE; 1 = became the primary owner
    if owned != 1:
        print(f"dobby stand-in: {SERVICE} is already owned on {address}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()

    def quit_on_signal() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_on_signal)

    def ready() -> bool:
        service.announce_ready()
        print("ready", flush=True)
        return GLib.SOURCE_REMOVE

    # DobbyDaemon owns its name ~0.1 s before it serves its object and emits Ready.
    GLib.timeout_add(STARTING_MS, ready)
    try:
        loop.run()
    finally:
        service.shutdown()
        bus.close_sync(None)
    return 0


@contextmanager
def running_standin(
    address: str, work_dir: Path, ready_timeout: float = 10.0, production: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """Run the stand-in as a separate process on ``address``; stop it (and any container it
    left behind, even if it had to be killed) when the block ends."""
    command = [sys.executable, "-m", "tests.support.dobby_standin", "--address", address, "--work-dir", str(work_dir)]
    process = subprocess.Popen(
        [*command, *(["--production"] if production else [])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        read_ready_line(process, ready_timeout)
        yield process
    finally:
        stop_process(process)
        delete_runc_containers(work_dir / "runc")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in for Dobby (org.rdk.dobby) on runc, for tests.")
    parser.add_argument("--address", default=os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", ""), help="bus address")
    parser.add_argument("--work-dir", type=Path, required=True, help="runc root and container state go here")
    parser.add_argument("--production", action="store_true", help="behave as a DOBBY_PROD build (no StartFromBundle)")
    opts = parser.parse_args(argv)
    if not opts.address:
        parser.error("no --address and no DBUS_SYSTEM_BUS_ADDRESS")
    return serve(opts.address, opts.work_dir, opts.production)


if __name__ == "__main__":
    raise SystemExit(main())
