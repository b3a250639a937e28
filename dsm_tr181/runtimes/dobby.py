"""Runtime adapter for Dobby, RDK's container manager, over its D-Bus API.

Dobby (``org.rdk.dobby`` on ``/org/rdk/dobby``, normally on the system bus) publishes
no introspection data, so every call is sent through Gio with an explicit signature.
All bus traffic happens on a :class:`~dsm_tr181.glib_thread.GLibThread`; results and
container exits reach the asyncio loop through ``call_soon_threadsafe``.

Container ids: Dobby sees ``id_prefix + container_id``, checked against Dobby's rule
(:func:`~dsm_tr181.runtimes.container_ids.check_container_id`). Dobby is shared with other clients, so only ids carrying
the prefix count as ours in ``list_ids`` and ``watch``. Descriptors are looked up in
``List()`` for every operation: Dobby reuses them once a container is gone.

Bundles: Dobby is given ``<work>/bundles/<id>/``, whose ``config.json`` is the effective
spec (see :mod:`dsm_tr181.containerspec`), written afresh at each start; its
``root.path`` is the DU's root filesystem. The DU's own bundle is never touched.

Logs: Dobby does not give a container the caller's files as stdout/stderr — fds passed
in ``StartFromBundle``'s ``ah`` become fds 3, 4, ... inside the container. Container
output is owned by Dobby's ``logging`` RDK plugin, which reads the container's pty and
writes it to a sink. So the config.json Dobby gets carries
``rdkPlugins.logging`` with the ``file`` sink at ``spec.log_path`` and
``limit = spec.log_max_bytes`` (``ociVersion`` ``1.0.2-dobby``, which makes Dobby run its
plugins). Dobby truncates that file at each start and drops output past the limit, so
the previous run's log is rotated to ``.1`` … ``.N`` (``spec.log_backups``) first.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.gi_repository import Gio, GLib
from dsm_tr181.glib_thread import Completion, GLibThread
from dsm_tr181.lcm.ports import (
    AvailabilityCallback,
    ContainerExit,
    ContainerState,
    ContainerStatus,
    ContainerUsage,
    ExitCallback,
    RuntimeUnavailable,
    StartSpec,
)
from dsm_tr181.runtimes.container_ids import check_container_id
from dsm_tr181.runtimes.dobby_bundle import make_safe_for_dobby
from dsm_tr181.runtimes.logrotate import backup_path, shift_backups
from dsm_tr181.sections import Invalid, build_section

_log = logging.getLogger(__name__)

_DBUS = "org.freedesktop.DBus"
_ID_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_DOBBY_OCI_VERSION = "1.0.2-dobby"


class DobbyState(enum.IntEnum):
    """``ctrl1.GetState`` codes (DobbyProtocol.h)."""

    INVALID = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    PAUSED = 4
    HIBERNATING = 5
    HIBERNATED = 6
    AWAKENING = 7


_STATES: dict[DobbyState, ContainerState] = {
    DobbyState.INVALID: ContainerState.ABSENT,
    DobbyState.STARTING: ContainerState.CREATED,
    DobbyState.RUNNING: ContainerState.RUNNING,
    # Dobby enters STOPPING once the container's process has died, for the teardown.
    DobbyState.STOPPING: ContainerState.STOPPED,
    DobbyState.PAUSED: ContainerState.PAUSED,
    # Hibernation checkpoints memory but the container stays up; Dobby stops it as running.
    DobbyState.HIBERNATING: ContainerState.RUNNING,
    DobbyState.HIBERNATED: ContainerState.RUNNING,
    DobbyState.AWAKENING: ContainerState.RUNNING,
}


@dataclass(frozen=True)
class DobbyRuntimeConfig:
    """The ``dobby`` runtime section of the configuration."""

    bus_address: str = ""  # "" = the system bus (DBUS_SYSTEM_BUS_ADDRESS, else its default socket)
    service: str = "org.rdk.dobby"
    object_path: str = "/org/rdk/dobby"
    id_prefix: str = "dsm-"  # marks the containers this runtime owns on the shared Dobby
    call_timeout: float = 10.0  # seconds for every call but StartFromBundle
    start_timeout: float = 60.0  # StartFromBundle replies once the container runs

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> DobbyRuntimeConfig:
        """Build from the configuration section; ValueError on unknown keys, wrong types or values."""
        return build_section(cls, section, "runtime.dobby")

    def __post_init__(self) -> None:
        for name in ("call_timeout", "start_timeout"):
            if getattr(self, name) <= 0:
                raise Invalid(name, f"must be a positive number of seconds, not {getattr(self, name)!r}")
        if self.bus_address and not Gio.dbus_is_address(self.bus_address):
            raise Invalid("bus_address", f"{self.bus_address!r} is not a D-Bus address")
        if not Gio.dbus_is_name(self.service):
            raise Invalid("service", f"{self.service!r} is not a D-Bus name")
        if not GLib.Variant.is_object_path(self.object_path):
            raise Invalid("object_path", f"{self.object_path!r} is not a D-Bus object path")
        if not _ID_CHARS.fullmatch(self.id_prefix) or ".." in self.id_prefix:
            raise Invalid("id_prefix", f"{self.id_prefix!r} may hold only [A-Za-z0-9._-], without '..'")


def exit_from_wait_status(container_id: str, wait_status: int) -> ContainerExit:
    """Decode ``StoppedWithStatus``'s waitpid() status: an exit code or a signal."""
    if os.WIFSIGNALED(wait_status):
        return ContainerExit(container_id, exit_status=None, signal=os.WTERMSIG(wait_status))
    if os.WIFEXITED(wait_status):
        return ContainerExit(container_id, exit_status=os.WEXITSTATUS(wait_status))
    return ContainerExit(container_id, exit_status=None)


def write_bundle(bundle: Path, config: Mapping[str, Any], log_path: Path, max_bytes: int, backups: int) -> None:
    """Write the effective spec as ``bundle/config.json`` for Dobby, with Dobby's
    ``logging`` plugin sending the container's output to ``log_path``.

    Rotates the previous log first (Dobby truncates the file at each start). Written
    afresh at every start: Dobby converts ``config.json`` in place (keeping its input as
    ``config-dobby.json``), so a previous start's file is never edited again.
    """
    spec = json.loads(json.dumps(config))  # a deep copy that is plain JSON
    spec["ociVersion"] = _DOBBY_OCI_VERSION
    spec.setdefault("rdkPlugins", {})["logging"] = {
        "required": True,
        "data": {"sink": "file", "fileOptions": {"path": str(log_path), "limit": max_bytes}},
    }
    bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_safe_for_dobby(spec)
    # Dobby finds a container's processes in the cgroup it names after the container id
    # (id_prefix keeps two daemons apart there); a cgroupsPath of ours would hide them.
    spec.get("linux", {}).pop("cgroupsPath", None)
    # Dobby takes root.path as relative to the bundle: point a link in the bundle at the rootfs.
    root = spec.setdefault("root", {})
    rootfs = str(root.get("path", "rootfs"))
    if os.path.isabs(rootfs):
        link = bundle / "rootfs"
        staged_link = bundle / ".rootfs.dsm"
        staged_link.unlink(missing_ok=True)
        staged_link.symlink_to(rootfs)
        os.replace(staged_link, link)
        root["path"] = "rootfs"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log_path, backups)
    staged = bundle / ".config.json.dsm"
    staged.write_text(json.dumps(spec, indent=2))
    os.replace(staged, bundle / "config.json")


def _rotate(log_path: Path, backups: int) -> None:
    if not log_path.exists():
        return
    if backups <= 0:
        log_path.unlink()
        return
    shift_backups(log_path, backups)
    os.replace(log_path, backup_path(log_path, 1))


DEFAULT_STOP_TIMEOUT = 10.0  # seconds, the TR-181 ShutdownDelay default


class DobbyRuntime:
    """Runs OCI bundles as Dobby containers (Runtime, PausableRuntime, MonitoredRuntime)."""

    name = "dobby"
    # Dobby puts each container in a cgroup named after it (its stats and plugins look there),
    # so no ExecEnv parent cgroup: the LCM shares the allocation out by admission instead.
    parent_cgroup = False

    def __init__(
        self, config: DobbyRuntimeConfig | None = None, glib: GLibThread | None = None, work: Path | None = None
    ) -> None:
        """``glib``: a shared GLib thread, else the runtime starts (and stops) its own.
        ``work``: where the bundles Dobby runs are written (``<work>/bundles/<id>/``)."""
        self._config = config or DobbyRuntimeConfig()
        self._bundles = (work or Path("/var/lib/dsm/dobby")) / "bundles"
        self._owns_glib = glib is None
        self._glib = glib or GLibThread(name="dobby-glib")
        self._closed = False
        # Owned by the GLib thread.
        self._connection: Gio.DBusConnection | None = None
        self._connecting: list[Completion[Gio.DBusConnection]] = []
        self._subscriptions: list[int] = []
        self._known: dict[str, int] = {}  # our container ids → descriptor, as last seen on the bus
        # Owned by the asyncio loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[ExitCallback] = []
        self._availability: list[AvailabilityCallback] = []
        self._exit_waiters: dict[str, list[asyncio.Future[ContainerExit]]] = {}
        self._cpu_marks: dict[str, tuple[int, int, int]] = {}  # container id → (descriptor, timestamp, cpu ns)

    @classmethod
    def create(cls, section: Mapping[str, Any], state_dir: Path) -> DobbyRuntime:
        """Build from the daemon's ``runtime.dobby`` section (Dobby keeps its own state)."""
        return cls(DobbyRuntimeConfig.from_config(section), work=state_dir / "dobby")

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> DobbyRuntime:
        """The adapter factory (dsm_tr181/adapters.py)."""
        return cls.create(section, context.state_dir)

    # --- Runtime ------------------------------------------------------------------------------

    async def start(self, spec: StartSpec) -> ContainerStatus:
        dobby_id = check_container_id(self._dobby_id(spec.container_id))
        if await self._descriptor_of(spec.container_id) is not None:
            raise Fault(FaultCode.COMMAND_FAILURE, f"container {dobby_id!r} is already running on Dobby")
        bundle = self._bundles / spec.container_id
        await asyncio.to_thread(write_bundle, bundle, spec.config, spec.log_path, spec.log_max_bytes, spec.log_backups)
        args = GLib.Variant("(ssah)", (dobby_id, str(bundle), []))
        (descriptor,) = await self._call("ctrl1", "StartFromBundle", args, "(i)", self._config.start_timeout)
        if descriptor < 0:
            raise Fault(
                FaultCode.COMMAND_FAILURE,
                f"Dobby could not start container {dobby_id!r} from {bundle} (StartFromBundle returned -1; "
                "the reason is in Dobby's log)",
            )
        _log.info("started %s on Dobby, descriptor %d", dobby_id, descriptor)
        return ContainerStatus(ContainerState.RUNNING, await self._init_pid(descriptor))

    async def stop(self, container_id: str, timeout: float | None = None) -> None:
        timeout = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
        descriptor = await self._descriptor_of(container_id)
        if descriptor is None:
            return
        with self._exit_waiter(container_id) as exited:
            if await self._state(descriptor) == DobbyState.PAUSED:
                # Dobby refuses a graceful Stop of a paused container.
                await self._call_bool("Resume", GLib.Variant("(i)", (descriptor,)))
            if await self._terminate(descriptor) and await _settled(exited, timeout):
                return
            _log.info("%s did not stop within %.1f s; forcing it", self._dobby_id(container_id), timeout)
            await self._force_stop(container_id, descriptor, exited)

    async def status(self, container_id: str) -> ContainerStatus:
        descriptor = await self._descriptor_of(container_id)
        if descriptor is None:
            return ContainerStatus(ContainerState.ABSENT)
        state = _STATES[await self._state(descriptor)]
        pid = await self._init_pid(descriptor) if state in (ContainerState.RUNNING, ContainerState.PAUSED) else 0
        return ContainerStatus(state, pid)

    async def usage(self, container_id: str) -> ContainerUsage:
        """Memory, pids and CPU share from ``GetInfo``; unknown values (-1, ()) when not running.

        Dobby gives cumulative CPU time (``cpu.usage.total``, ns) and a monotonic
        ``timestamp`` (ns): the share of all CPUs is their ratio between two samples, so
        the first sample of a container gives -1.
        """
        descriptor = await self._descriptor_of(container_id)
        if descriptor is None:
            self._cpu_marks.pop(container_id, None)
            return ContainerUsage()
        info = await self._info(descriptor)
        memory = _number(((info.get("memory") or {}).get("user") or {}).get("usage"))
        pids = (_number(pid) for pid in info.get("pids") or [])
        cpu_ns = _number(((info.get("cpu") or {}).get("usage") or {}).get("total"))
        return ContainerUsage(
            memory_kib=memory // 1024 if memory is not None and memory >= 0 else -1,
            cpu_percent=self._cpu_percent(container_id, descriptor, cpu_ns, _number(info.get("timestamp"))),
            pids=tuple(pid for pid in pids if pid is not None),
        )

    def _cpu_percent(self, container_id: str, descriptor: int, cpu_ns: int | None, stamp_ns: int | None) -> int:
        if cpu_ns is None or cpu_ns < 0 or stamp_ns is None:
            return -1
        previous = self._cpu_marks.get(container_id)
        self._cpu_marks[container_id] = (descriptor, stamp_ns, cpu_ns)
        if previous is None or previous[0] != descriptor or stamp_ns <= previous[1] or cpu_ns < previous[2]:
            return -1
        share = (cpu_ns - previous[2]) / ((stamp_ns - previous[1]) * (os.cpu_count() or 1))
        return max(0, min(100, round(share * 100)))

    async def list_ids(self) -> list[str]:
        return list((await self._list()).keys())

    async def adopt(self) -> list[str]:
        """Dobby forgets stopped containers: every listed one of ours is live, and its
        Stopped signal reaches watch() through the subscription made on connecting.

        Also checks that this Dobby can start bundles at all (RuntimeUnavailable if not)."""
        listed = await self.list_ids()
        await self._check_start_offered()
        return listed

    async def remove(self, container_id: str) -> None:
        """Dobby forgets stopped containers: force-stop it if it is still there; drop its bundle."""
        descriptor = await self._descriptor_of(container_id)
        if descriptor is not None:
            with self._exit_waiter(container_id) as exited:
                await self._force_stop(container_id, descriptor, exited)
        await asyncio.to_thread(shutil.rmtree, self._bundles / container_id, True)

    def watch(self, callback: ExitCallback) -> None:
        """Report exits of our containers to ``callback`` on the calling (running) asyncio loop."""
        self._loop = asyncio.get_running_loop()
        self._watchers.append(callback)

    def watch_availability(self, callback: AvailabilityCallback) -> None:
        """Dobby leaving the bus (or the bus closing) → (False, reason); Dobby's ``Ready``
        signal or a new owner of its name → (True, "")."""
        self._loop = asyncio.get_running_loop()
        self._availability.append(callback)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._glib.running:
            await self._glib.call(self._disconnect)
        if self._owns_glib:
            await asyncio.to_thread(self._glib.stop)
        for waiters in self._exit_waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._exit_waiters.clear()

    # --- PausableRuntime ----------------------------------------------------------------------

    async def pause(self, container_id: str) -> None:
        await self._freeze(container_id, "Pause")

    async def resume(self, container_id: str) -> None:
        await self._freeze(container_id, "Resume")

    async def _freeze(self, container_id: str, method: str) -> None:
        dobby_id = self._dobby_id(container_id)
        descriptor = await self._descriptor_of(container_id)
        if descriptor is None:
            raise Fault(FaultCode.COMMAND_FAILURE, f"container {dobby_id!r} is not on Dobby")
        if not await self._call_bool(method, GLib.Variant("(i)", (descriptor,))):
            raise Fault(FaultCode.COMMAND_FAILURE, f"Dobby refused to {method.lower()} {dobby_id!r}")

    # --- helpers on the asyncio side ----------------------------------------------------------

    def _dobby_id(self, container_id: str) -> str:
        return self._config.id_prefix + container_id

    async def _list(self) -> dict[str, int]:
        """Our containers on Dobby now: container id → descriptor."""
        return self._ours_listed(await self._call("ctrl1", "List", None, "(aias)", on_reply=self._remember))

    async def _descriptor_of(self, container_id: str) -> int | None:
        return (await self._list()).get(container_id)

    async def _state(self, descriptor: int) -> DobbyState:
        (code,) = await self._call("ctrl1", "GetState", GLib.Variant("(i)", (descriptor,)), "(i)")
        try:
            return DobbyState(code)
        except ValueError:
            raise Fault(FaultCode.INTERNAL_ERROR, f"Dobby reported an unknown container state {code}") from None

    async def _info(self, descriptor: int) -> dict[str, Any]:
        (text,) = await self._call("ctrl1", "GetInfo", GLib.Variant("(i)", (descriptor,)), "(s)")
        if not text:
            return {}
        try:
            info = json.loads(text)
        except ValueError as exc:
            raise Fault(FaultCode.INTERNAL_ERROR, f"Dobby's GetInfo reply is not JSON: {exc}") from exc
        return info if isinstance(info, dict) else {}

    async def _init_pid(self, descriptor: int) -> int:
        """Host pid of the container's init (namespace pid 1), or 0 if Dobby does not say."""
        for process in (await self._info(descriptor)).get("processes") or []:
            if isinstance(process, dict) and _number(process.get("nsPid")) == 1:
                return _number(process.get("pid")) or 0
        return 0

    async def _check_start_offered(self) -> None:
        """Production builds of Dobby (DOBBY_PROD) do not register StartFromBundle: a call
        without arguments gets UnknownMethod there (RuntimeUnavailable) and -1 ("error
        getting the args") elsewhere."""
        await self._call("ctrl1", "StartFromBundle", None, "(i)")

    async def _terminate(self, descriptor: int) -> bool:
        """SIGTERM to the container's init, sent by us: Dobby's graceful ``Stop`` kills
        about 0.5 s after its SIGTERM, which would cut ShutdownDelay short. The pid comes
        from ``GetInfo`` and is checked again once a pidfd holds it (no pid reuse race).
        Falls back to Dobby's ``Stop(false)`` when the pid is unknown or not ours to signal."""
        pid = await self._init_pid(descriptor)
        if pid > 0:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return True  # already gone: its Stopped signal is on the way
            except OSError as exc:
                _log.warning("cannot open pid %d of descriptor %d: %s", pid, descriptor, exc)
            else:
                try:
                    if await self._init_pid(descriptor) == pid:
                        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                        return True
                except ProcessLookupError:
                    return True
                except PermissionError as exc:
                    _log.warning("cannot signal pid %d: %s", pid, exc)
                finally:
                    os.close(pidfd)
        _log.warning("descriptor %d: Dobby's Stop kills ~0.5 s after SIGTERM (ShutdownDelay cut)", descriptor)
        return await self._call_bool("Stop", GLib.Variant("(ib)", (descriptor, False)))

    async def _call_bool(self, method: str, args: GLib.Variant) -> bool:
        (ok,) = await self._call("ctrl1", method, args, "(b)")
        return bool(ok)

    async def _force_stop(self, container_id: str, descriptor: int, exited: asyncio.Future[ContainerExit]) -> None:
        asked = await self._call_bool("Stop", GLib.Variant("(ib)", (descriptor, True)))
        if not asked and (exited.done() or await self._descriptor_of(container_id) is None):
            return
        if asked and await _settled(exited, self._config.call_timeout):
            return
        raise Fault(FaultCode.INTERNAL_ERROR, f"Dobby did not stop {self._dobby_id(container_id)!r}")

    @contextmanager
    def _exit_waiter(self, container_id: str) -> Iterator[asyncio.Future[ContainerExit]]:
        """A future resolved by the container's next exit, while the block runs."""
        waiter: asyncio.Future[ContainerExit] = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(container_id, []).append(waiter)
        try:
            yield waiter
        finally:
            waiters = self._exit_waiters.get(container_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._exit_waiters.pop(container_id, None)

    def _deliver_exit(self, exit_: ContainerExit) -> None:
        for waiter in self._exit_waiters.pop(exit_.container_id, []):
            if not waiter.done():
                waiter.set_result(exit_)
        for callback in list(self._watchers):
            try:
                callback(exit_)
            except Exception:
                _log.exception("exit callback failed for %s", exit_.container_id)

    async def _call(
        self,
        interface: str,
        method: str,
        args: GLib.Variant | None,
        reply_type: str,
        timeout: float | None = None,
        on_reply: Callable[[tuple[Any, ...]], None] | None = None,
    ) -> tuple[Any, ...]:
        """Call ``<service>.<interface>.<method>``; ``on_reply`` sees the reply on the GLib thread."""
        connection = await self._connect()
        seconds = timeout or self._config.call_timeout

        def send(completion: Completion[tuple[Any, ...]]) -> None:
            sent = time.monotonic()

            def done(conn: Gio.DBusConnection, result: Gio.AsyncResult, *_: object) -> None:
                try:
                    values = tuple(conn.call_finish(result).unpack())
                except GLib.Error as err:
                    completion.set_exception(self._fault_for(method, err, seconds, time.monotonic() - sent))
                    return
                if on_reply is not None:
                    on_reply(values)
                completion.set_result(values)

            connection.call(
                self._config.service, self._config.object_path, f"{self._config.service}.{interface}", method,
                args, GLib.VariantType(reply_type), Gio.DBusCallFlags.NONE, int(seconds * 1000), None, done,
            )  # fmt: skip

        return await self._glib.call_async(send)

    async def _connect(self) -> Gio.DBusConnection:
        if self._closed:
            raise Fault(FaultCode.INTERNAL_ERROR, "the Dobby runtime is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._glib.start()
        try:
            return await asyncio.wait_for(self._glib.call_async(self._open), self._config.call_timeout)
        except TimeoutError:
            raise _unavailable(f"no connection to the bus within {self._config.call_timeout:.0f} s") from None

    # --- the GLib thread ----------------------------------------------------------------------

    def _open(self, completion: Completion[Gio.DBusConnection]) -> None:
        if self._connection is not None and not self._connection.is_closed():
            completion.set_result(self._connection)
            return
        self._connecting.append(completion)
        if len(self._connecting) > 1:
            return
        try:
            address = self._config.bus_address or Gio.dbus_address_get_for_bus_sync(Gio.BusType.SYSTEM, None)
        except GLib.Error as err:
            self._connected(None, _unavailable(f"no system bus address: {err.message}"))
            return
        flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION

        def done(_source: object, result: Gio.AsyncResult, *_: object) -> None:
            try:
                connection = Gio.DBusConnection.new_for_address_finish(result)
            except GLib.Error as err:
                self._connected(None, _unavailable(f"cannot connect to the bus at {address}: {err.message}"))
                return
            self._subscribe(connection)
            self._connected(connection, None)

        Gio.DBusConnection.new_for_address(address, flags, None, None, done)

    def _connected(self, connection: Gio.DBusConnection | None, error: Fault | None) -> None:
        self._connection = connection
        waiting, self._connecting = self._connecting, []
        for completion in waiting:
            if connection is not None:
                completion.set_result(connection)
            else:
                completion.set_exception(error or _unavailable("no connection"))

    def _subscribe(self, connection: Gio.DBusConnection) -> None:
        service, path = self._config.service, self._config.object_path
        none = Gio.DBusSignalFlags.NONE
        self._subscriptions = [
            connection.signal_subscribe(service, f"{service}.ctrl1", "Started", path, None, none, self._on_started),
            connection.signal_subscribe(
                service, f"{service}.ctrl1", "StoppedWithStatus", path, None, none, self._on_stopped
            ),
            connection.signal_subscribe(service, f"{service}.admin1", "Ready", path, None, none, self._on_ready),
            connection.signal_subscribe(
                _DBUS, _DBUS, "NameOwnerChanged", "/org/freedesktop/DBus", service, none, self._on_owner_changed
            ),
        ]
        connection.connect("closed", self._on_closed)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        for subscription in self._subscriptions:
            connection.signal_unsubscribe(subscription)
        self._subscriptions = []
        if not connection.is_closed():
            connection.close_sync(None)

    def _remember(self, reply: tuple[Any, ...]) -> None:
        self._known = self._ours_listed(reply)

    def _ours(self, dobby_id: str) -> str | None:
        prefix = self._config.id_prefix
        return dobby_id[len(prefix) :] if dobby_id.startswith(prefix) else None

    def _ours_listed(self, reply: tuple[Any, ...]) -> dict[str, int]:
        """Our containers in a ``List`` reply: container id → descriptor (on either thread)."""
        descriptors, ids = reply
        listed = ((self._ours(i), d) for d, i in zip(descriptors, ids, strict=False))
        return {container_id: d for container_id, d in listed if container_id is not None}

    def _on_started(self, *signal: Any) -> None:
        descriptor, dobby_id = signal[5].unpack()
        container_id = self._ours(dobby_id)
        if container_id is not None:
            self._known[container_id] = descriptor

    def _on_stopped(self, *signal: Any) -> None:
        descriptor, dobby_id, wait_status = signal[5].unpack()
        container_id = self._ours(dobby_id)
        if container_id is None:
            return
        self._known.pop(container_id, None)
        exit_ = exit_from_wait_status(container_id, wait_status)
        _log.info("%s (descriptor %d) stopped: %s", dobby_id, descriptor, exit_)
        self._post(self._deliver_exit, exit_)

    def _on_ready(self, *_signal: Any) -> None:
        _log.info("Dobby is ready")
        self._post_availability(True, "")

    def _on_owner_changed(self, *signal: Any) -> None:
        _name, old_owner, new_owner = signal[5].unpack()
        if old_owner:
            # Its descriptors died with it and a restarted Dobby does not know our
            # containers: report them as gone.
            _log.warning("%s left the bus; %d container(s) reported stopped", self._config.service, len(self._known))
            gone, self._known = self._known, {}
            self._post_availability(False, f"{self._config.service} left the bus (Dobby stopped or crashed)")
            for container_id in gone:
                self._post(self._deliver_exit, ContainerExit(container_id, exit_status=None))
        if new_owner:
            _log.info("%s appeared on the bus", self._config.service)
            self._post_availability(True, "")

    def _on_closed(self, _connection: Gio.DBusConnection, remote_peer_vanished: bool, error: GLib.Error | None) -> None:
        _log.warning("connection to the bus closed%s", f": {error.message}" if error else "")
        self._connection = None
        self._subscriptions = []
        if not self._closed:
            self._post_availability(False, "Dobby not available: the connection to its bus closed")

    def _post_availability(self, up: bool, reason: str) -> None:
        """On the GLib thread: tell the availability watchers, on the asyncio loop."""
        if self._loop is None:
            return
        for callback in list(self._availability):
            try:
                self._loop.call_soon_threadsafe(callback, up, reason)
            except RuntimeError:  # the loop is closed: nobody listens any more
                return

    def _post(self, fn: Callable[[ContainerExit], None], exit_: ContainerExit) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(fn, exit_)
        except RuntimeError:  # the loop is closed: nobody listens any more
            _log.debug("exit of %s dropped: the asyncio loop is closed", exit_.container_id)

    def _fault_for(self, method: str, err: GLib.Error, seconds: float, elapsed: float) -> Fault:
        """The fault for a failed call, telling the time it really took: a NoReply before
        the timeout means Dobby left the bus (crashed) while the call was pending."""
        remote = Gio.dbus_error_get_remote_error(err) or ""
        timed_out = err.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT)
        if timed_out or (remote.endswith(".NoReply") and elapsed >= seconds - 0.05):
            return _unavailable(f"no answer to {method} within {seconds:.0f} s")
        if remote.endswith(".NoReply"):
            return _unavailable(f"{self._config.service} went away {elapsed:.2f} s into {method}, without answering")
        if remote.endswith((".ServiceUnknown", ".NameHasNoOwner", ".Disconnected")) or err.matches(
            Gio.io_error_quark(), Gio.IOErrorEnum.CLOSED
        ):
            return _unavailable(f"{self._config.service} is not on the bus")
        if remote.endswith((".UnknownObject", ".UnknownInterface")):
            # DobbyDaemon owns its name a moment before it serves its object (then: Ready).
            return _unavailable(f"{self._config.service} is on the bus but not serving yet (starting)")
        if remote.endswith(".UnknownMethod"):
            if method == "StartFromBundle":
                return RuntimeUnavailable(PRODUCTION_BUILD)
            return Fault(FaultCode.INTERNAL_ERROR, f"Dobby does not offer {method}")
        return Fault(FaultCode.INTERNAL_ERROR, f"Dobby {method} failed: {err.message}")


def _number(value: object) -> int | None:
    """An integer from Dobby's JSON, where numbers sometimes come as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


def _unavailable(detail: str) -> RuntimeUnavailable:
    return RuntimeUnavailable(f"Dobby not available: {detail}")


PRODUCTION_BUILD = (
    "Dobby is a production build (DOBBY_PROD): it does not offer StartFromBundle, so it cannot run "
    "bundles; use a Dobby built without DOBBY_PROD"
)


async def _settled(future: asyncio.Future[ContainerExit], timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``future`` without cancelling it; True if it is done."""
    await asyncio.wait({future}, timeout=timeout)
    return future.done()
