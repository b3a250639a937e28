"""Runtimes that go away and come back.

A runtime that cannot be reached (Dobby not on the bus or crashed, a runtime binary
gone) raises :class:`~dsm_tr181.lcm.ports.RuntimeUnavailable`. Its ExecEnvs then turn
``Error`` — the daemon and every other ExecEnv carry on — and the reason is logged and
given to each EU of theirs that should run (ExecutionFaultMessage) and to every start
refused meanwhile. The runtime is probed every :data:`PROBE_INTERVAL` seconds, and at
once when it says it may be back (:class:`~dsm_tr181.lcm.ports.MonitoredRuntime`, e.g.
Dobby's ``Ready`` signal or a new owner of its bus name). When a probe answers, its
ExecEnvs are ``Up`` again: the containers it still runs are adopted (or stopped when no
EU owns them) and the EUs that should run are started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault
from dsm_tr181.lcm.ports import MonitoredRuntime, Runtime, RuntimeUnavailable

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

PROBE_INTERVAL = 5.0  # seconds between probes of a runtime that is down


class Availability:
    def __init__(self, lcm: Lcm) -> None:
        self.lcm = lcm
        self._runtimes: dict[int, Runtime] = {id(r): r for r in lcm.runtimes.values()}
        self._down: dict[int, str] = {}  # id(runtime) → why it is unavailable
        self._probes: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}

    def runtimes(self) -> list[Runtime]:
        return list(self._runtimes.values())

    def watch(self) -> None:
        for runtime in self._runtimes.values():
            if isinstance(runtime, MonitoredRuntime):
                runtime.watch_availability(lambda up, reason, r=runtime: self._changed(r, up, reason))

    def execenvs_of(self, runtime: Runtime) -> list[str]:
        return [name for name, r in self.lcm.runtimes.items() if r is runtime]

    def reason(self, ee: str) -> str:
        """Why ``ee``'s runtime is unavailable; "" when it is available."""
        runtime = self.lcm.runtimes.get(ee)
        return self._down.get(id(runtime), "") if runtime is not None else ""

    # -- state changes ---------------------------------------------------------------------------

    def runtime_failed(self, ee: str, fault: RuntimeUnavailable) -> None:
        """A call to ``ee``'s runtime found it unreachable."""
        runtime = self.lcm.runtimes.get(ee)
        if runtime is not None:
            self.mark_down(runtime, fault.message)

    def mark_down(self, runtime: Runtime, reason: str) -> None:
        key = id(runtime)
        first = key not in self._down
        self._down[key] = reason
        if first:
            log.error("runtime %s is unavailable (%s): ExecEnv(s) %s are Error until it is back",
                      runtime.name, reason, ", ".join(self.execenvs_of(runtime)))  # fmt: skip
        for ee in self.execenvs_of(runtime):
            self.lcm.execenvs.show_status(ee)
            self.lcm.executions.runtime_down(ee, reason)
        if key not in self._probes or self._probes[key].done():
            self._wake[key] = asyncio.Event()
            self._probes[key] = self.lcm.spawn(self._probe_until_up(runtime), f"probe-{runtime.name}")

    def _changed(self, runtime: Runtime, up: bool, reason: str) -> None:
        if not up:
            self.mark_down(runtime, reason)
        elif id(runtime) in self._down:
            self._wake[id(runtime)].set()

    async def _probe_until_up(self, runtime: Runtime) -> None:
        key = id(runtime)
        while key in self._down:
            wake = self._wake[key]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), PROBE_INTERVAL)
            wake.clear()
            try:
                await self.lcm.reconcile_runtime(runtime)
            except RuntimeUnavailable as fault:
                self._down[key] = fault.message
                continue
            except Fault as fault:  # it answered: available, though a container misbehaved
                log.error("runtime %s is back but adopting its containers failed: %s", runtime.name, fault)
            self._down.pop(key, None)
            log.warning("runtime %s is available again: ExecEnv(s) %s are Up",
                        runtime.name, ", ".join(self.execenvs_of(runtime)))  # fmt: skip
            for ee in self.execenvs_of(runtime):
                self.lcm.execenvs.show_status(ee)
                if self.lcm.execenvs.enabled(ee):
                    self.lcm.executions.autostart(ee)
