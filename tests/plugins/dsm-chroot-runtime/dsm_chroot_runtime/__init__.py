"""A dsm-tr181 runtime in a distribution of its own: the EU's process in a chroot of its rootfs.

It uses only what dsm-tr181 publishes for adapters (dsm_tr181.lcm.ports, dsm_tr181.sections,
dsm_tr181.adapters.AdapterContext) and is found through its ``dsm_tr181.runtimes`` entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerExit, ContainerState, ContainerStatus, ContainerUsage, ExitCallback, StartSpec
from dsm_tr181.sections import build_section

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"  # found on the host's PATH, not the EU's


@dataclass(frozen=True)
class ChrootConfig:
    kill_timeout: float = 5.0  # SIGTERM, then SIGKILL after this many seconds


class ChrootRuntime:
    name = "chroot"

    def __init__(self, config: ChrootConfig, state_dir: Path) -> None:
        self.config = config
        self._pids = state_dir / "chroot"
        self._pids.mkdir(parents=True, exist_ok=True)
        self._watchers: list[ExitCallback] = []
        self._running: dict[str, int] = {}
        self._waits: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> ChrootRuntime:
        return cls(build_section(ChrootConfig, section, f"runtime.{context.name}"), context.state_dir)

    async def start(self, spec: StartSpec) -> ContainerStatus:
        if spec.container_id in self._running:
            raise Fault(FaultCode.COMMAND_FAILURE, f"{spec.container_id} is running already")
        process_spec, root = spec.config["process"], spec.config["root"]["path"]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(item.split("=", 1) for item in process_spec.get("env", []))
        with open(spec.log_path, "ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    CHROOT, root, *process_spec["args"], env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=log, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise Fault(FaultCode.COMMAND_FAILURE, f"cannot start {spec.container_id}: {exc}") from None
        self._running[spec.container_id] = process.pid
        (self._pids / spec.container_id).write_text(str(process.pid))
        self._waits[spec.container_id] = asyncio.create_task(self._reap(spec.container_id, process.wait()))
        return ContainerStatus(ContainerState.RUNNING, process.pid)

    async def _reap(self, container_id: str, exited: Any) -> None:
        code = await exited
        self._forget(container_id)
        event = ContainerExit(container_id, code if code >= 0 else None, -code if code < 0 else None)
        for callback in self._watchers:
            callback(event)

    def _forget(self, container_id: str) -> None:
        self._running.pop(container_id, None)
        (self._pids / container_id).unlink(missing_ok=True)

    async def stop(self, container_id: str, timeout: float | None = None) -> None:
        pid, wait = self._running.get(container_id), self._waits.get(container_id)
        if pid is None or wait is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(wait), self.config.kill_timeout if timeout is None else timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            await wait

    async def status(self, container_id: str) -> ContainerStatus:
        pid = self._running.get(container_id)
        return ContainerStatus(ContainerState.RUNNING, pid) if pid else ContainerStatus(ContainerState.ABSENT)

    async def usage(self, container_id: str) -> ContainerUsage:
        pid = self._running.get(container_id)
        if pid is None:
            return ContainerUsage()
        try:
            rss = next(
                line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
            )
        except (OSError, StopIteration):
            return ContainerUsage()
        return ContainerUsage(memory_kib=int(rss.split()[1]), pids=(pid,))

    async def list_ids(self) -> list[str]:
        return sorted(self._running)

    async def remove(self, container_id: str) -> None:
        await self.stop(container_id, timeout=0)

    def watch(self, callback: ExitCallback) -> None:
        self._watchers.append(callback)

    async def adopt(self) -> list[str]:
        """Processes of a previous daemon are not our children: end them (their EUs start again)."""
        for pid_file in self._pids.iterdir():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            pid_file.unlink()
        return sorted(self._running)

    async def close(self) -> None:
        for wait in self._waits.values():
            wait.cancel()
