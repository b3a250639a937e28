"""The runc / crun command line: argument lists, exit codes and JSON, in one place.

Both runtimes share the OCI runtime CLI (run, state, kill, pause, resume, delete, list)
and the global flags used here (``--root``, ``--log``, ``--log-format=json``,
``--systemd-cgroup``); with ``--log-format=json`` their error messages arrive as JSON
lines on stderr, which :func:`runtime_messages` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.errors import AdapterUnavailable, Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerState, RuntimeUnavailable

# Debian's crun refuses a hybrid cgroup layout. In a private mount namespace with
# cgroup2 mounted over /sys/fs/cgroup it sees a unified host. The script is fixed:
# the mount binary and the runtime's argument list reach it only as positional
# parameters, never as shell text.
CGROUP2_TRAMPOLINE = '"$1" -t cgroup2 cgroup2 /sys/fs/cgroup && shift && exec "$@"'

CLI_TIMEOUT = 30.0  # seconds; a runtime command that takes longer is killed

_STATES = {
    "created": ContainerState.CREATED,
    "running": ContainerState.RUNNING,
    "pausing": ContainerState.PAUSED,
    "paused": ContainerState.PAUSED,
    "stopped": ContainerState.STOPPED,
}


@dataclass(frozen=True)
class OciState:
    """One container as ``state`` or ``list --format json`` describes it."""

    container_id: str
    pid: int
    state: ContainerState


def _require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AdapterUnavailable(f"OCI runtime adapter needs {name!r}, which is not on PATH")
    return path


def runtime_messages(text: str) -> str:
    """The ``msg`` fields of the runtime's JSON log lines (other lines as they are)."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        messages.append(str(entry.get("msg", line)) if isinstance(entry, dict) else line)
    return "; ".join(messages)[:2000] or "no error message"


def _load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise Fault(FaultCode.INTERNAL_ERROR, f"{what}: runtime printed invalid JSON: {exc}") from None


def _parse_state(entry: Any, what: str) -> OciState:
    if not isinstance(entry, dict):
        raise Fault(FaultCode.INTERNAL_ERROR, f"{what}: expected a JSON object, got {type(entry).__name__}")
    container_id, pid, status = entry.get("id"), entry.get("pid"), entry.get("status")
    if not isinstance(container_id, str) or not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
        raise Fault(FaultCode.INTERNAL_ERROR, f"{what}: missing or malformed id/pid in {entry!r}")
    if status not in _STATES:
        raise Fault(FaultCode.INTERNAL_ERROR, f"{what}: unknown container status {status!r}")
    return OciState(container_id, pid, _STATES[status])


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OciCli:
    """Runs one OCI runtime binary against one state root."""

    def __init__(self, binary: str, root: Path, *, systemd_cgroup: bool, cgroup2_namespace: bool) -> None:
        self.name = Path(binary).name
        self.root = root
        prefix: list[str] = []
        if cgroup2_namespace:
            prefix = [
                _require("unshare"), "--mount", "--propagation", "private", "--",
                _require("sh"), "-c", CGROUP2_TRAMPOLINE, "cgroup2-namespace", _require("mount"),
            ]  # fmt: skip
        self._base = [*prefix, _require(binary), f"--root={root}", "--log-format=json"]
        if systemd_cgroup:
            self._base.append("--systemd-cgroup")

    async def _spawn(self, args: tuple[str, ...]) -> tuple[int, bytes, bytes]:
        """Run ``<runtime> <args>``; its exit code, stdout and stderr."""
        argv = [*self._base, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:  # the runtime binary is gone: its ExecEnvs are Error until it is back
            raise RuntimeUnavailable(f"cannot run {argv[0]}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
        except TimeoutError:
            raise Fault(FaultCode.INTERNAL_ERROR, f"{self.name} {args[0]} timed out after {CLI_TIMEOUT:g} s") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled
                proc.kill()
        assert proc.returncode is not None
        return proc.returncode, out or b"", err or b""

    def _failure(self, args: tuple[str, ...], error_text: str) -> Fault:
        return Fault(FaultCode.COMMAND_FAILURE, f"{self.name} {' '.join(args)}: {runtime_messages(error_text)}")

    async def run(self, *args: str) -> bytes:
        """Run a runtime command; its stdout, or Fault carrying the runtime's error message."""
        code, out, err = await self._spawn(args)
        if code != 0:
            raise self._failure(args, err.decode(errors="replace"))
        return out

    async def _run_to_end(self, args: tuple[str, ...], flags: tuple[str, ...], output: int) -> int:
        """Run ``<runtime> <flags> <args>`` in a new session with stdout/stderr on ``output``;
        its exit code.

        Its end is seen through a pidfd on the loop: no pipe to drain and no child-watcher
        thread between the runtime's exit and the caller (a start waits on nothing else)."""
        argv = [*self._base, *flags, *args]
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
            )
        except OSError as exc:  # the runtime binary is gone: its ExecEnvs are Error until it is back
            raise RuntimeUnavailable(f"cannot run {argv[0]}: {exc}") from None
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        pidfd = os.pidfd_open(proc.pid)  # our unreaped child: it exists until waited for
        loop.add_reader(pidfd, _settle, ended)
        try:
            await asyncio.wait_for(ended, CLI_TIMEOUT)
        except TimeoutError:
            raise Fault(FaultCode.INTERNAL_ERROR, f"{self.name} {args[0]} timed out after {CLI_TIMEOUT:g} s") from None
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if proc.poll() is None:  # timed out or cancelled
                proc.kill()
                proc.wait()
        return proc.wait()

    async def run_detached(
        self, container_id: str, bundle: Path, *, pid_file: Path, output: int, error_log: Path
    ) -> None:
        """``run --detach``: create and start in one runtime process (a ``create`` then a
        ``start`` cost a second one), with the container's stdout/stderr on ``output`` (an
        fd it inherits). Returns once the container's process runs.

        The runtime's own stderr is the container's too, so its error message is read
        from ``--log=error_log`` instead. The CLI runs in a new session so that signals
        meant for the daemon's terminal or process group never reach the container.
        """
        error_log.unlink(missing_ok=True)
        args = ("run", "--detach", "--bundle", str(bundle.absolute()), "--pid-file", str(pid_file), container_id)
        code = await self._run_to_end(args, (f"--log={error_log}",), output)
        try:
            if code != 0:
                text = error_log.read_text(errors="replace") if error_log.exists() else ""
                raise self._failure(("run", container_id), text)
        finally:
            error_log.unlink(missing_ok=True)

    async def state(self, container_id: str) -> OciState | None:
        """The container's state, or None when this root does not hold it."""
        # Both runtimes keep one directory per container under --root.
        if not (self.root / container_id).is_dir():
            return None
        try:
            out = await self.run("state", container_id)
        except Fault:
            if not (self.root / container_id).is_dir():  # deleted meanwhile
                return None
            raise
        return _parse_state(_load_json(out, f"{self.name} state"), f"{self.name} state")

    async def list_states(self) -> list[OciState]:
        what = f"{self.name} list"
        entries = _load_json(await self.run("list", "--format=json"), what)
        if entries is None:  # runc prints null for an empty root
            return []
        if not isinstance(entries, list):
            raise Fault(FaultCode.INTERNAL_ERROR, f"{what}: expected a JSON array")
        return [_parse_state(entry, what) for entry in entries]
