"""The runtime contract (dsm_tr181/lcm/ports.py Runtime, PausableRuntime), one suite for every
back end: runc, crun, the Dobby stand-in and, when DSM_DOBBY_DAEMON is set, the real DobbyDaemon.

Each test runs a real busybox container from the effective spec the LCM would derive.
What only one adapter does (runc's log rotation by size, Dobby's D-Bus API) stays in that
adapter's own test module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerExit, ContainerState, PausableRuntime, Runtime, StartSpec
from tests.contract.runtimes import Backend

pytestmark = pytest.mark.integration

# sh as pid 1 ignores SIGTERM unless it traps it; `wait` (unlike a foreground sleep) is interrupted by the trap.
GRACEFUL = "echo hello from busybox; trap 'echo stopping; exit 0' TERM; sleep 3600 & wait"
STUBBORN = "trap '' TERM; echo stubborn; sleep 3600 & wait"


class Exits:
    """Collects what watch() reports; fails if a report arrives off the asyncio loop."""

    def __init__(self) -> None:
        self.seen: list[ContainerExit] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def __call__(self, event: ContainerExit) -> None:
        assert asyncio.get_running_loop() is self._loop, "watch() called back outside the daemon's loop"
        self.seen.append(event)
        self._changed.set()

    async def of(self, container_id: str, timeout: float = 10.0) -> ContainerExit:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.seen:
                    if event.container_id == container_id:
                        return event
                self._changed.clear()
                await self._changed.wait()


def watched(backend: Backend) -> tuple[Runtime, Exits]:
    runtime, exits = backend.runtime(), Exits()
    runtime.watch(exits)
    return runtime, exits


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 45))


async def logged(spec: StartSpec, text: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not (spec.log_path.exists() and text in spec.log_path.read_text(errors="replace")):
            await asyncio.sleep(0.02)


def test_start_state_logs_and_graceful_stop(backend: Backend) -> None:
    spec = backend.spec("graceful", GRACEFUL)

    async def scenario() -> None:
        runtime, exits = watched(backend)
        started = await runtime.start(spec)
        assert started.state is ContainerState.RUNNING and started.pid > 0
        assert os.path.exists(f"/proc/{started.pid}")  # a host pid
        status = await runtime.status("graceful")
        assert status.state is ContainerState.RUNNING and status.pid == started.pid
        assert await runtime.list_ids() == ["graceful"]
        await logged(spec, "hello from busybox")

        began = time.monotonic()
        await runtime.stop("graceful", timeout=10)
        assert time.monotonic() - began < 5  # it stopped on SIGTERM: no wait for the timeout
        assert await exits.of("graceful") == ContainerExit("graceful", 0)
        assert "stopping" in spec.log_path.read_text()
        assert (await runtime.status("graceful")).state is ContainerState.ABSENT
        assert await runtime.list_ids() == []
        await runtime.stop("graceful", timeout=1)  # idempotent
        await runtime.close()

    run(scenario)


def test_stop_kills_a_container_that_ignores_sigterm(backend: Backend) -> None:
    spec = backend.spec("stubborn", STUBBORN)

    async def scenario() -> None:
        runtime, exits = watched(backend)
        await runtime.start(spec)
        await logged(spec, "stubborn")  # its trap is set
        began = time.monotonic()
        await runtime.stop("stubborn", timeout=1.0)
        assert 1.0 <= time.monotonic() - began < 6.0
        assert await exits.of("stubborn") == ContainerExit("stubborn", None, signal=signal.SIGKILL)
        assert (await runtime.status("stubborn")).state is ContainerState.ABSENT
        await runtime.close()

    run(scenario)


def test_exit_code_and_output_are_reported(backend: Backend) -> None:
    spec = backend.spec("batch", "echo bye; sleep 0.2; exit 3")

    async def scenario() -> None:
        runtime, exits = watched(backend)
        await runtime.start(spec)
        assert await exits.of("batch") == ContainerExit("batch", 3)
        assert "bye" in spec.log_path.read_text()
        # Stopped: either still known as such (runc, crun) or forgotten (Dobby); never running.
        assert (await runtime.status("batch")).state in (ContainerState.STOPPED, ContainerState.ABSENT)
        await runtime.remove("batch")
        assert (await runtime.status("batch")).state is ContainerState.ABSENT
        assert await runtime.list_ids() == []
        await runtime.close()

    run(scenario)


def test_death_by_a_signal_from_outside_is_reported(backend: Backend) -> None:
    spec = backend.spec("victim", GRACEFUL)

    async def scenario() -> None:
        runtime, exits = watched(backend)
        pid = (await runtime.start(spec)).pid
        os.kill(pid, signal.SIGKILL)
        assert await exits.of("victim") == ContainerExit("victim", None, signal=signal.SIGKILL)
        await runtime.stop("victim", timeout=1)  # stopped already: just forgotten
        assert await runtime.list_ids() == []
        await runtime.close()

    run(scenario)


def test_failed_start_raises_and_leaves_nothing(backend: Backend) -> None:
    spec = backend.spec("broken", "exec /no/such/binary")
    spec = StartSpec("broken", {**spec.config, "process": {**spec.config["process"], "args": ["/no/such/binary"]}},
                     spec.log_path)  # fmt: skip

    async def scenario() -> None:
        runtime, exits = watched(backend)
        with pytest.raises(Fault) as caught:
            await runtime.start(spec)
        assert caught.value.code is FaultCode.COMMAND_FAILURE
        assert await runtime.list_ids() == []
        assert (await runtime.status("broken")).state is ContainerState.ABSENT
        await asyncio.sleep(0.1)
        assert exits.seen == []
        await runtime.close()

    run(scenario)


def test_ids_one_container_each_and_remove(backend: Backend) -> None:
    spec = backend.spec("first", GRACEFUL)

    async def scenario() -> None:
        runtime, exits = watched(backend)
        await runtime.start(spec)
        await runtime.start(StartSpec("second", spec.config, spec.log_path.with_name("second.log")))
        assert sorted(await runtime.list_ids()) == ["first", "second"]
        with pytest.raises(Fault) as caught:
            await runtime.start(spec)
        assert caught.value.code is FaultCode.COMMAND_FAILURE
        for bad in ("a..b", "with space", "x" * 130, "../etc"):
            with pytest.raises(Fault) as caught:
                await runtime.start(StartSpec(bad, spec.config, spec.log_path))
            assert caught.value.code is FaultCode.INVALID_ARGUMENTS
        await runtime.remove("first")  # a running container is killed and forgotten
        assert (await exits.of("first")).exit_status in (None, 0)
        assert await runtime.list_ids() == ["second"]
        await runtime.remove("first")  # idempotent
        await runtime.remove("never-started")
        await runtime.remove("second")
        assert await runtime.list_ids() == []
        await runtime.close()

    run(scenario)


def test_pause_resume_and_stop_while_paused(backend: Backend) -> None:
    spec = backend.spec("frozen", GRACEFUL)

    async def scenario() -> None:
        runtime, exits = watched(backend)
        assert isinstance(runtime, PausableRuntime)
        await runtime.start(spec)
        await logged(spec, "hello from busybox")
        await runtime.pause("frozen")
        assert (await runtime.status("frozen")).state is ContainerState.PAUSED
        await runtime.resume("frozen")
        assert (await runtime.status("frozen")).state is ContainerState.RUNNING
        await runtime.pause("frozen")
        await runtime.stop("frozen", timeout=10)  # thawed, then asked to stop
        assert await exits.of("frozen") == ContainerExit("frozen", 0)
        assert await runtime.list_ids() == []
        await runtime.close()

    run(scenario)


def test_usage_of_a_running_container(backend: Backend) -> None:
    spec = backend.spec("measured", GRACEFUL)

    async def scenario() -> None:
        runtime, _ = watched(backend)
        pid = (await runtime.start(spec)).pid
        usage = await runtime.usage("measured")
        assert usage.memory_kib > 0
        assert pid in usage.pids
        assert usage.cpu_percent == -1 or 0 <= usage.cpu_percent <= 100
        await runtime.remove("measured")
        assert (await runtime.usage("measured")).memory_kib == -1
        await runtime.close()

    run(scenario)


def test_a_new_instance_adopts_and_reports_the_exit(backend: Backend) -> None:
    spec = backend.spec("survivor", GRACEFUL)

    async def scenario() -> None:
        first, _ = watched(backend)
        pid = (await first.start(spec)).pid
        await first.close()  # the daemon goes away; the container does not
        assert os.path.exists(f"/proc/{pid}")

        second, exits = watched(backend)
        assert await second.adopt() == ["survivor"]
        assert await second.adopt() == ["survivor"]  # already watched
        assert (await second.status("survivor")).state is ContainerState.RUNNING
        os.kill(pid, signal.SIGKILL)
        assert await exits.of("survivor") == ContainerExit("survivor", None, signal=signal.SIGKILL)
        await second.remove("survivor")
        assert await second.list_ids() == []
        await second.close()

    run(scenario)
