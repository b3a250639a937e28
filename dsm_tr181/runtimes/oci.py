"""Runtime adapter for the runc and crun command lines.

Containers run detached from the daemon: each is created in a new session with a pipe
to its own log writer (:mod:`.logshim`, which holds the size cap at every write) as its
stdout/stderr, so it keeps running and logging while the daemon restarts. The periodic
copy-truncate check remains for containers started before the writer existed. Exits
are seen through pidfds (see :mod:`.reaper`); after a restart :meth:`OciRuntime.adopt`
watches the containers of the state root again.

Per container, besides the runtime's own state under ``--root``, the adapter keeps
``<work>/containers/<id>.json`` (the log rotation policy, so rotation survives a
restart), the pid file written by ``run --detach``, and ``<work>/bundles/<id>/config.json``:
the effective spec it was given, the bundle runc/crun run (its ``root.path`` is the DU's
root filesystem). The DU's own config.json is never read or written here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import (
    ContainerExit,
    ContainerState,
    ContainerStatus,
    ContainerUsage,
    ExitCallback,
    StartSpec,
)
from dsm_tr181.runtimes import logwriter
from dsm_tr181.runtimes.cgroup_limits import apply_parent, oom_kills
from dsm_tr181.runtimes.cgroups import UsageSample, container_dirs, sample_usage
from dsm_tr181.runtimes.container_ids import check_container_id
from dsm_tr181.runtimes.logrotate import LogPolicy, rotate_if_needed
from dsm_tr181.runtimes.ocicli import OciCli, OciState
from dsm_tr181.runtimes.reaper import ExitStatus, ExitWatcher, become_subreaper
from dsm_tr181.sections import Invalid, build_section

_log = logging.getLogger(__name__)

KILL_WAIT = 5.0  # seconds to wait for the exit after SIGKILL before giving up
_LIVE = (ContainerState.RUNNING, ContainerState.PAUSED)
_CPUS = os.cpu_count() or 1  # read once: glibc reads /sys for it at every call


@dataclass(frozen=True)
class OciRuntimeConfig:
    """Settings of the runc / crun adapter, read from its configuration section."""

    binary: str = "runc"  # name on PATH or path of runc or crun
    root: str = ""  # --root state directory; "" = <ExecEnv state dir>/oci-<binary>/root, else <root>/<ExecEnv>
    kill_timeout: float = 10.0  # SIGTERM -> SIGKILL grace when stop() gets none (TR-181 ShutdownDelay default)
    systemd_cgroup: bool = False  # pass --systemd-cgroup
    # Run every runtime command in a private mount namespace with cgroup2 mounted over
    # /sys/fs/cgroup: lets crun, which rejects hybrid cgroup layouts, work on them.
    cgroup2_mount_namespace: bool = False
    log_check_interval: float = 5.0  # seconds between log size checks
    # Pass the spec's device cgroup rules. On cgroup v2 they become an eBPF program, which
    # crun loads only with CAP_SYS_RESOURCE; without it set false (device nodes cannot be
    # created inside anyway: CAP_MKNOD is not in the default set).
    device_rules: bool = True

    def __post_init__(self) -> None:
        if not self.binary:
            raise Invalid("binary", "must not be empty")
        if self.kill_timeout < 0:
            raise Invalid("kill_timeout", "must be >= 0")
        if self.log_check_interval <= 0:
            raise Invalid("log_check_interval", "must be > 0")

    @classmethod
    def from_config(cls, section: Mapping[str, Any], where: str = "runtime.oci") -> OciRuntimeConfig:
        """Build from the configuration section ``where``; ValueError on unknown keys, wrong types or values."""
        return build_section(cls, section, where)


@dataclass
class _Tracked:
    """A container whose init process is watched."""

    pid: int
    log: LogPolicy | None
    exited: asyncio.Future[ContainerExit]
    report: bool = True  # False while a failed start is cleaned up: not an exit to announce
    cgroups: dict[str, Path] | None = None  # its cgroup directories, found at the first sample


@dataclass(frozen=True)
class _CpuMark:
    pid: int
    when: float
    cpu_usec: int


class OciRuntime:
    """Runs OCI bundles with runc or crun; implements Runtime and PausableRuntime."""

    def __init__(self, config: OciRuntimeConfig, state_dir: Path) -> None:
        """``state_dir``: the ExecEnv's state directory (holds ``oci-<binary>/``; its name is the ExecEnv's).

        Makes this process a child subreaper. AdapterUnavailable if a binary is missing.
        """
        self.config = config
        self.name = Path(config.binary).name
        # StartSpec.execenv_resources applied to the ExecEnv's parent cgroup (not under systemd).
        self.parent_cgroup = not config.systemd_cgroup
        work = state_dir / f"oci-{self.name}"
        self.root = Path(config.root) / state_dir.name if config.root else work / "root"
        self._files = work / "containers"
        self._bundles = work / "bundles"
        self._cli = OciCli(
            config.binary,
            self.root,
            systemd_cgroup=config.systemd_cgroup,
            cgroup2_namespace=config.cgroup2_mount_namespace,
        )
        for directory in (self.root, self._files, self._bundles):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        become_subreaper()
        self._callbacks: list[ExitCallback] = []
        self._tracked: dict[str, _Tracked] = {}
        self._cpu_marks: dict[str, _CpuMark] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._watcher: ExitWatcher | None = None
        self._rotation: asyncio.Task[None] | None = None
        self._writers: set[asyncio.Future[int]] = set()  # log writers being started

    @classmethod
    def create(cls, section: Mapping[str, Any], state_dir: Path) -> OciRuntime:
        """Build from the daemon's ``runtime.<name>`` section."""
        return cls(OciRuntimeConfig.from_config(section), state_dir)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> OciRuntime:
        """The adapter factory (dsm_tr181/adapters.py): work in the context's state directory."""
        return cls(OciRuntimeConfig.from_config(section, f"runtime.{context.name}"), context.state_dir)

    # -- Runtime -------------------------------------------------------------------

    async def start(self, spec: StartSpec) -> ContainerStatus:
        container_id = check_container_id(spec.container_id)
        async with self._lock(container_id):
            await self._clear_leftover(container_id)
            policy = LogPolicy(spec.log_path, spec.log_max_bytes, spec.log_backups)
            try:
                bundle, read_end, write_end = self._prepare(spec, policy)
                try:
                    pid = await self._run(container_id, bundle, write_end)
                except BaseException:
                    os.close(read_end)
                    raise
                # The log writer starts once the runtime is done and in a thread, so that neither
                # the runtime nor the report of the start waits for its fork or competes with its
                # interpreter's start-up; the pipe holds the container's first output till then.
                writer = asyncio.ensure_future(asyncio.to_thread(logwriter.spawn, policy, read_end))
                self._writers.add(writer)
                writer.add_done_callback(functools.partial(self._writer_started, container_id))
                # Its init is this process's child from here on (a child subreaper), a
                # zombie until reaped if it already ended: the pidfd cannot miss its exit.
                tracked = self._track(container_id, pid, policy)
            except OSError as exc:  # log file, pid file, or the init vanished before its pidfd
                await self._discard(container_id)
                raise Fault(FaultCode.INTERNAL_ERROR, f"cannot start container {container_id}: {exc}") from exc
            except BaseException:
                await self._discard(container_id)
                raise
        state = ContainerState.STOPPED if tracked.exited.done() else ContainerState.RUNNING
        return ContainerStatus(state, pid)

    async def stop(self, container_id: str, timeout: float | None = None) -> None:
        """SIGTERM, SIGKILL after ``timeout`` s (default: kill_timeout), then delete. Idempotent."""
        check_container_id(container_id)
        grace = self.config.kill_timeout if timeout is None else max(0.0, timeout)
        async with self._lock(container_id):
            current = await self._cli.state(container_id)
            if current is None:
                self._forget_files(container_id)
                return
            if current.state in _LIVE:
                await self._terminate(current, grace)
            await self._cli.run("delete", "--force", container_id)
            self._forget_files(container_id)

    async def status(self, container_id: str) -> ContainerStatus:
        current = await self._cli.state(check_container_id(container_id))
        if current is None:
            return ContainerStatus(ContainerState.ABSENT)
        return ContainerStatus(current.state, current.pid)

    async def usage(self, container_id: str) -> ContainerUsage:
        return self.usage_now(container_id)

    def usage_now(self, container_id: str) -> ContainerUsage:
        """Usage of a watched container from its cgroup files and /proc: a few reads, no
        runtime command (the exit watcher knows whether it runs; its init pid is known)."""
        tracked = self._tracked.get(check_container_id(container_id))
        if tracked is None or tracked.exited.done():
            return ContainerUsage()
        if tracked.cgroups is None:
            tracked.cgroups = container_dirs(tracked.pid)
        previous = self._cpu_marks.get(container_id)
        first = previous is None or previous.pid != tracked.pid
        sample = sample_usage(tracked.pid, tracked.cgroups, with_age=first)
        if not sample.pids:
            return ContainerUsage()
        return ContainerUsage(
            memory_kib=sample.memory_kib,
            cpu_percent=self._cpu_percent(container_id, tracked.pid, sample),
            pids=sample.pids,
        )

    async def list_ids(self) -> list[str]:
        return [entry.container_id for entry in await self._cli.list_states()]

    async def remove(self, container_id: str) -> None:
        """``delete --force`` (kills a live container); idempotent."""
        check_container_id(container_id)
        async with self._lock(container_id):
            if await self._cli.state(container_id) is not None:
                await self._cli.run("delete", "--force", container_id)
            self._forget_files(container_id)

    def watch(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)

    async def close(self) -> None:
        """Stop watching; containers keep running (a new instance can adopt them)."""
        await asyncio.gather(*self._writers, return_exceptions=True)
        if self._rotation is not None:
            self._rotation.cancel()
            await asyncio.gather(self._rotation, return_exceptions=True)
            self._rotation = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        for tracked in self._tracked.values():
            tracked.exited.cancel()
        self._tracked.clear()

    # -- PausableRuntime -----------------------------------------------------------

    async def pause(self, container_id: str) -> None:
        async with self._lock(check_container_id(container_id)):
            await self._cli.run("pause", container_id)

    async def resume(self, container_id: str) -> None:
        async with self._lock(check_container_id(container_id)):
            await self._cli.run("resume", container_id)

    # -- re-adoption ---------------------------------------------------------------

    async def adopt(self) -> list[str]:
        """Watch again the running and paused containers of the state root (after a restart).

        Returns the ids now watched. Exits while nobody watched are not reported:
        such containers are left STOPPED for the caller to find (status, list_ids).
        """
        adopted = []
        for listed in await self._cli.list_states():
            container_id = listed.container_id
            if listed.state not in _LIVE:
                continue
            async with self._lock(container_id):
                if container_id not in self._tracked and not await self._adopt_one(listed):
                    continue
            adopted.append(container_id)
        return adopted

    async def _adopt_one(self, listed: OciState) -> bool:
        try:
            self._track(listed.container_id, listed.pid, self._load_policy(listed.container_id))
        except ProcessLookupError:
            return False
        # The pid came from the state file before the pidfd existed; the runtime checks
        # the process start time, so "still live" means the pidfd is the container's init.
        current = await self._cli.state(listed.container_id)
        if current is None or current.state not in _LIVE or current.pid != listed.pid:
            self._untrack(listed.container_id)
            return False
        return True

    # -- internals -----------------------------------------------------------------

    def _lock(self, container_id: str) -> asyncio.Lock:
        """Serialises the lifecycle calls on one container."""
        return self._locks.setdefault(container_id, asyncio.Lock())

    async def _clear_leftover(self, container_id: str) -> None:
        current = await self._cli.state(container_id)
        if current is None:
            return
        if current.state in _LIVE:
            raise Fault(FaultCode.COMMAND_FAILURE, f"container {container_id} is already {current.state.value}")
        await self._cli.run("delete", "--force", container_id)

    def _prepare(self, spec: StartSpec, policy: LogPolicy) -> tuple[Path, int, int]:
        """Everything before the runtime runs: the log policy file, the bundle, the ExecEnv's
        parent cgroup and the log file; (bundle, the read and write ends of the pipe from the
        container's output to its log writer). A few small writes without fsync (under a
        millisecond): on the loop, as a hop to a thread and back costs more than that."""
        container_id = spec.container_id
        self._policy_file(container_id).write_text(json.dumps(policy.as_dict()))
        bundle = self._write_bundle(container_id, spec.config)
        if not self.config.systemd_cgroup:
            cgroup = str(spec.config.get("linux", {}).get("cgroupsPath", ""))
            apply_parent(cgroup, spec.execenv_resources, unified=self.config.cgroup2_mount_namespace)
        read_end, write_end = logwriter.pipe(policy)
        return bundle, read_end, write_end

    async def _run(self, container_id: str, bundle: Path, output: int) -> int:
        """Run the container detached with ``output`` (closed here) as its stdout/stderr; its init pid."""
        pid_file = self._files / f"{container_id}.pid"
        try:
            await self._cli.run_detached(
                container_id,
                bundle,
                pid_file=pid_file,
                output=output,
                error_log=self._files / f"{container_id}.run-error",
            )
        finally:
            os.close(output)
        try:
            return int(pid_file.read_text())
        except ValueError as exc:
            raise Fault(FaultCode.INTERNAL_ERROR, f"{self.name} run {container_id}: bad pid file: {exc}") from None

    async def _discard(self, container_id: str) -> None:
        """Undo a failed start: delete the container, reap its init, announce nothing."""
        tracked = self._tracked.get(container_id)
        if tracked is not None:
            tracked.report = False
        try:
            if await self._cli.state(container_id) is not None:
                await self._cli.run("delete", "--force", container_id)
        except Fault as exc:
            _log.warning("cleanup after failed start of %s: %s", container_id, exc)
        if tracked is not None:
            await self._wait_exit(tracked, KILL_WAIT)
            self._untrack(container_id)
        self._forget_files(container_id)

    async def _terminate(self, current: OciState, grace: float) -> None:
        container_id = current.container_id
        tracked = self._tracked.get(container_id)
        if tracked is None:
            try:
                tracked = self._track(container_id, current.pid, self._load_policy(container_id))
            except ProcessLookupError:
                return
        if current.state is ContainerState.PAUSED:  # a frozen process does not act on signals
            await self._cli.run("resume", container_id)
        for signal, wait in (("TERM", grace), ("KILL", KILL_WAIT)):
            await self._signal(container_id, tracked, signal)
            if await self._wait_exit(tracked, wait):
                return
        raise Fault(FaultCode.INTERNAL_ERROR, f"container {container_id} is still running after SIGKILL")

    async def _signal(self, container_id: str, tracked: _Tracked, signal: str) -> None:
        try:
            await self._cli.run("kill", container_id, signal)
        except Fault:
            if tracked.exited.done():  # it exited meanwhile: nothing left to signal
                return
            current = await self._cli.state(container_id)
            if current is not None and current.state in _LIVE:
                raise

    @staticmethod
    async def _wait_exit(tracked: _Tracked, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(tracked.exited), timeout)
        except TimeoutError:
            return False
        return True

    def _track(self, container_id: str, pid: int, policy: LogPolicy | None) -> _Tracked:
        """Watch ``pid`` as the init of ``container_id``; ProcessLookupError if it is gone."""
        loop = asyncio.get_running_loop()
        if self._watcher is None:
            self._watcher = ExitWatcher(loop)
        tracked = _Tracked(pid, policy, loop.create_future())
        self._watcher.watch(pid, functools.partial(self._exited, container_id, tracked))
        self._tracked[container_id] = tracked
        if self._rotation is None:
            self._rotation = loop.create_task(self._rotate_logs(), name=f"{self.name}-log-rotation")
        return tracked

    def _writer_started(self, container_id: str, writer: asyncio.Future[int]) -> None:
        self._writers.discard(writer)
        if writer.cancelled():
            return
        failure = writer.exception()
        if failure is not None:  # its output now fails with EPIPE: the container may end on it
            _log.error("container %s runs without its log writer: %s", container_id, failure)
            return
        self._reap(writer.result())

    def _reap(self, pid: int) -> None:
        """Collect the log writer's exit (it ends with its container)."""
        if self._watcher is None:
            self._watcher = ExitWatcher(asyncio.get_running_loop())
        self._watcher.watch(pid, lambda status: None)

    def _untrack(self, container_id: str) -> None:
        tracked = self._tracked.pop(container_id, None)
        if tracked is not None and self._watcher is not None:
            self._watcher.forget(tracked.pid)
            tracked.exited.cancel()

    def _exited(self, container_id: str, tracked: _Tracked, status: ExitStatus) -> None:
        if self._tracked.get(container_id) is tracked:
            del self._tracked[container_id]
        self._cpu_marks.pop(container_id, None)
        event = ContainerExit(container_id, status.exit_status, status.signal, self._oom_killed(container_id))
        if not tracked.exited.done():
            tracked.exited.set_result(event)
        if tracked.report:
            loop = asyncio.get_running_loop()  # the watcher calls this from the loop's reader
            for callback in self._callbacks:
                loop.call_soon(callback, event)

    async def _rotate_logs(self) -> None:
        while True:
            await asyncio.sleep(self.config.log_check_interval)
            policies = [tracked.log for tracked in self._tracked.values() if tracked.log is not None]
            if policies:
                await asyncio.to_thread(_rotate_all, policies)

    def _cpu_percent(self, container_id: str, pid: int, sample: UsageSample) -> int:
        """Share of all CPUs used since the previous call (first call: since the start)."""
        if sample.cpu_usec is None:
            return -1
        now = time.monotonic()
        previous = self._cpu_marks.get(container_id)
        self._cpu_marks[container_id] = _CpuMark(pid, now, sample.cpu_usec)
        if previous is not None and previous.pid == pid and now > previous.when:
            used, elapsed = sample.cpu_usec - previous.cpu_usec, now - previous.when
        elif sample.age_s:
            used, elapsed = sample.cpu_usec, sample.age_s
        else:
            return -1
        return max(0, min(100, round(used / (elapsed * 1e6 * _CPUS) * 100)))

    def _oom_killed(self, container_id: str) -> bool:
        """Whether the OOM killer killed a process of the container (its cgroup is still there:
        runc removes it at delete)."""
        if self.config.systemd_cgroup:
            return False
        try:
            config = json.loads((self._bundles / container_id / "config.json").read_text())
        except (OSError, ValueError):
            return False
        cgroup = str(config.get("linux", {}).get("cgroupsPath", ""))
        return bool(cgroup) and oom_kills(cgroup, unified=self.config.cgroup2_mount_namespace) > 0

    def _policy_file(self, container_id: str) -> Path:
        return self._files / f"{container_id}.json"

    def _load_policy(self, container_id: str) -> LogPolicy | None:
        try:
            return LogPolicy.from_dict(json.loads(self._policy_file(container_id).read_text()))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            _log.warning("ignoring log policy of %s: %s", container_id, exc)
            return None

    def _write_bundle(self, container_id: str, config: Mapping[str, Any]) -> Path:
        """``<work>/bundles/<id>/config.json`` from the effective spec (plain OCI: no rdkPlugins)."""
        bundle = self._bundles / container_id
        bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
        plain = {key: value for key, value in config.items() if key != "rdkPlugins"}
        if not self.config.device_rules:
            resources = {k: v for k, v in plain.get("linux", {}).get("resources", {}).items() if k != "devices"}
            plain["linux"] = {**plain.get("linux", {}), "resources": resources}
        if self.config.systemd_cgroup:
            plain["linux"] = {**plain.get("linux", {}), "cgroupsPath": _systemd_cgroup(plain)}
        staged = bundle / ".config.json.tmp"
        staged.write_text(json.dumps(plain))
        os.replace(staged, bundle / "config.json")
        return bundle

    def _forget_files(self, container_id: str) -> None:
        for name in (f"{container_id}.json", f"{container_id}.pid"):
            (self._files / name).unlink(missing_ok=True)
        shutil.rmtree(self._bundles / container_id, ignore_errors=True)


def _systemd_cgroup(config: Mapping[str, Any]) -> str:
    """``/a/b/c`` as the systemd driver's ``slice:prefix:name`` (``a.slice:b:c``)."""
    path = str(config.get("linux", {}).get("cgroupsPath", ""))
    if not path.startswith("/"):
        return path
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2:
        return f"system.slice:dsm:{parts[0] if parts else 'container'}"
    return f"{parts[0]}.slice:{'-'.join(parts[1:-1]) or 'dsm'}:{parts[-1]}"


def _rotate_all(policies: list[LogPolicy]) -> None:
    for policy in policies:
        try:
            rotate_if_needed(policy)
        except OSError as exc:
            _log.warning("cannot rotate %s: %s", policy.path, exc)
