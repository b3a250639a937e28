"""The Dobby adapter against the stand-in and the real DobbyDaemon, with the same tests:
what the real daemon does (found with rdkcentral/Dobby built from source) the stand-in
does too, and the adapter copes with both."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dsm_tr181.containerspec import ConfinementPolicy
from dsm_tr181.lcm.ports import ContainerExit, ContainerState, RuntimeUnavailable, StartSpec
from dsm_tr181.runtimes.dobby import PRODUCTION_BUILD
from dsm_tr181.sample_bundle import make_bundle
from tests.integration.dobby_daemons import Dobby
from tests.integration.test_runtime_dobby import NEEDS_BUS_AND_RUNC, STUBBORN, dobby_runtime, spec_for
from tests.support import dobby_real
from tests.support.dbusdaemon import PrivateBus, gdbus_call, private_bus
from tests.support.dobby_standin import running_standin
from tests.support.specs import spec_of

pytestmark = NEEDS_BUS_AND_RUNC

SERVICE, PATH, CTRL = "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1"
SHOWS_HOSTNAME = "echo host=$(hostname); trap 'exit 0' TERM; sleep 3600 & wait"
# Needs 2 s to stop: Dobby's own Stop would kill it after 0.5 s.
SLOW_TO_STOP = "echo up; trap 'sleep 2; echo clean exit; exit 0' TERM; sleep 3600 & wait"


def call(dobby: Dobby, method: str, *args: str) -> str:
    return gdbus_call(dobby.bus.address, SERVICE, PATH, f"{CTRL}.{method}", *args)


def test_start_info_pid_file_hostname_cpu_and_clean_logs(dobby: Dobby, tmp_path: Path) -> None:
    # A privileged EU runs its bundle as it asks: here without linux.resources (the real
    # daemon crashes on it); the adapter makes what it sends safe.
    bundle = make_bundle(tmp_path / "bundles" / "info", args=("/bin/sh", "-c", SHOWS_HOSTNAME))
    config = spec_of(bundle, "info", policy=ConfinementPolicy(allow_privileged=True), privileged=True)
    assert "resources" not in config["linux"]
    spec = StartSpec("info", config, tmp_path / "logs" / "info.log")
    dobby_bundle = dobby.bus.directory / "dsm-dobby" / "bundles" / "info"

    async def scenario() -> None:
        async with dobby_runtime(dobby.bus) as (runtime, exits):
            started = await runtime.start(spec)
            assert started.state is ContainerState.RUNNING
            assert int((dobby_bundle / "container.pid").read_text()) == started.pid
            descriptor = (await runtime._list())["info"]
            info = await runtime._info(descriptor)  # GetInfo's JSON as Dobby sent it
            assert info["id"] == "dsm-info" and info["state"] == "running"
            assert started.pid in info["pids"] and all(isinstance(p, int) for p in info["pids"])
            init = next(p for p in info["processes"] if p["nsPid"] == 1)
            assert init["pid"] == started.pid and isinstance(init["executable"], str)
            assert isinstance(info["cpu"]["usage"]["total"], int) and isinstance(info["timestamp"], int)
            assert isinstance(info["memory"]["user"]["usage"], int)
            assert (await runtime.usage("info")).cpu_percent == -1  # one sample: no share yet
            await asyncio.sleep(0.2)
            assert 0 <= (await runtime.usage("info")).cpu_percent <= 100
            await runtime.stop("info", 5)
            assert await exits.of("info") == ContainerExit("info", exit_status=0)
            exits.seen.clear()
            # Started again from the converted bundle (the real daemon then sent its hook
            # messages into the container's log).
            await runtime.start(spec)
            await runtime.stop("info", 5)
            assert await exits.of("info") == ContainerExit("info", exit_status=0)

    with dobby.run():
        asyncio.run(scenario())
    for log in (spec.log_path, spec.log_path.with_name("info.log.1")):
        text = log.read_text()
        assert "host=dsm-info" in text  # hostname = the container id
        assert "Running hook" not in text  # Dobby's plugin launcher output stays out of the EU log


def test_graceful_stop_kills_half_a_second_after_sigterm(dobby: Dobby, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "stubborn", STUBBORN)

    async def scenario() -> None:
        async with dobby_runtime(dobby.bus) as (runtime, exits):
            await runtime.start(spec)
            descriptor = (await runtime._list())["stubborn"]
            began = time.monotonic()
            assert await asyncio.to_thread(call, dobby, "Stop", f"int32 {descriptor}", "false") == "(true,)"
            assert await exits.of("stubborn") == ContainerExit("stubborn", None, signal=signal.SIGKILL)
            assert 0.3 < time.monotonic() - began < 3

    with dobby.run():
        asyncio.run(scenario())


def test_shutdown_delay_is_honoured(dobby: Dobby, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "slow", SLOW_TO_STOP)

    async def scenario() -> None:
        async with dobby_runtime(dobby.bus) as (runtime, exits):
            await runtime.start(spec)
            began = time.monotonic()
            await runtime.stop("slow", 6)
            assert 2 <= time.monotonic() - began < 6
            assert await exits.of("slow") == ContainerExit("slow", exit_status=0)

    with dobby.run():
        asyncio.run(scenario())
    assert "clean exit" in spec.log_path.read_text()


def test_get_state_answers_minus_1_to_wrong_argument_types(dobby: Dobby) -> None:
    with dobby.run():
        assert call(dobby, "GetState", "'seven'") == "(-1,)"
        assert call(dobby, "GetState", "int32 4242") == "(0,)"


def test_leftover_containers_of_a_killed_instance_are_killed_at_start(dobby: Dobby, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "leftover", SHOWS_HOSTNAME)

    async def start() -> int:
        async with dobby_runtime(dobby.bus) as (runtime, _exits):
            return (await runtime.start(spec)).pid

    with dobby.run() as process:  # leaving the block removes leftovers: look inside it
        pid = asyncio.run(start())
        process.kill()
        process.wait(5)
        os.kill(pid, 0)  # the container outlived its Dobby
        with dobby.run():
            _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return  # killed, waiting for its parent to reap it
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs {timeout} s after Dobby started again")


def test_dobby_dying_mid_call_is_reported_with_the_real_time(dobby: Dobby, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "cut", SHOWS_HOSTNAME)

    async def scenario(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
        async with dobby_runtime(dobby.bus, start_timeout=60, call_timeout=30) as (runtime, _exits):
            await runtime.list_ids()
            process.send_signal(signal.SIGSTOP)  # the next call waits for an answer...
            pending = asyncio.ensure_future(runtime.start(spec))
            await asyncio.sleep(0.3)
            process.kill()  # ...that never comes: Dobby dies
            with pytest.raises(RuntimeUnavailable) as caught:
                await pending
            assert "went away" in caught.value.message and "without answering" in caught.value.message
            assert "within" not in caught.value.message

    with dobby.run() as process:
        asyncio.run(scenario(process))


PROD_ENV = "DSM_DOBBY_PROD_DAEMON"  # a DobbyDaemon built with -DDOBBY_PROD=ON


@pytest.mark.parametrize(
    "kind",
    [
        "standin",
        pytest.param(
            "real",
            marks=[
                pytest.mark.dobby_real,
                pytest.mark.skipif(not os.environ.get(PROD_ENV), reason=f"{PROD_ENV} is not set (a DOBBY_PROD build)"),
            ],
        ),
    ],
)
def test_production_build_makes_the_runtime_unavailable_with_the_reason(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = StartSpec("p", spec_of(make_bundle(tmp_path / "bundle"), "p"), tmp_path / "p.log")

    async def scenario(address: str) -> None:
        async with dobby_runtime(PrivateBus(address, 0, tmp_path)) as (runtime, _exits):
            for attempt in (runtime.adopt(), runtime.start(spec)):
                with pytest.raises(RuntimeUnavailable) as caught:
                    await attempt
                assert caught.value.message == PRODUCTION_BUILD

    with private_bus() as bus:
        if kind == "real":
            monkeypatch.setenv(dobby_real.ENV, os.environ[PROD_ENV])
            daemon = dobby_real.running_dobby(bus.address, tmp_path / "prod")
        else:
            daemon = running_standin(bus.address, tmp_path / "prod", production=True)
        with daemon:
            asyncio.run(scenario(bus.address))
