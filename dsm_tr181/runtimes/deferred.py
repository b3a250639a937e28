"""A runtime adapter that could not be created when the daemon started.

A configured runtime whose binary or library is missing at start (runc not installed yet,
say) must not take the daemon down: it stands here in its place. Every call raises
:class:`~dsm_tr181.lcm.ports.RuntimeUnavailable` with the reason, so its ExecEnvs are
``Error`` (see :mod:`dsm_tr181.lcm.availability`), and every call first tries to create the
adapter again; the availability probe's calls therefore bring it in as soon as it can be
created, and from then on every call goes to it.
"""

from __future__ import annotations

from collections.abc import Callable

from dsm_tr181.errors import AdapterUnavailable, Fault, FaultCode
from dsm_tr181.lcm.ports import (
    AvailabilityCallback,
    ContainerStatus,
    ContainerUsage,
    ExitCallback,
    MonitoredRuntime,
    PausableRuntime,
    Runtime,
    RuntimeUnavailable,
    StartSpec,
)


class DeferredRuntime:
    """Runtime, PausableRuntime and MonitoredRuntime by delegation, once ``factory`` succeeds."""

    def __init__(self, name: str, factory: Callable[[], Runtime], reason: str) -> None:
        self.name = name
        self._factory = factory
        self._reason = reason
        self._real: Runtime | None = None
        self._exits: list[ExitCallback] = []
        self._availability: list[AvailabilityCallback] = []

    def _runtime(self) -> Runtime:
        if self._real is None:
            try:
                real = self._factory()
            except AdapterUnavailable as exc:
                self._reason = str(exc)
                raise RuntimeUnavailable(self._reason) from None
            for callback in self._exits:
                real.watch(callback)
            if isinstance(real, MonitoredRuntime):
                for available in self._availability:
                    real.watch_availability(available)
            self._real = real
        return self._real

    async def start(self, spec: StartSpec) -> ContainerStatus:
        return await self._runtime().start(spec)

    async def stop(self, container_id: str, timeout: float | None = None) -> None:
        await self._runtime().stop(container_id, timeout)

    async def status(self, container_id: str) -> ContainerStatus:
        return await self._runtime().status(container_id)

    async def usage(self, container_id: str) -> ContainerUsage:
        return await self._runtime().usage(container_id)

    async def list_ids(self) -> list[str]:
        return await self._runtime().list_ids()

    async def remove(self, container_id: str) -> None:
        await self._runtime().remove(container_id)

    async def adopt(self) -> list[str]:
        return await self._runtime().adopt()

    def watch(self, callback: ExitCallback) -> None:
        self._exits.append(callback)
        if self._real is not None:
            self._real.watch(callback)

    def watch_availability(self, callback: AvailabilityCallback) -> None:
        self._availability.append(callback)
        if isinstance(self._real, MonitoredRuntime):
            self._real.watch_availability(callback)

    async def pause(self, container_id: str) -> None:
        await self._pausable().pause(container_id)

    async def resume(self, container_id: str) -> None:
        await self._pausable().resume(container_id)

    def _pausable(self) -> PausableRuntime:
        runtime = self._runtime()
        if not isinstance(runtime, PausableRuntime):
            raise Fault(FaultCode.COMMAND_FAILURE, f"runtime {self.name} cannot pause containers")
        return runtime

    async def close(self) -> None:
        if self._real is not None:
            await self._real.close()
