"""DobbyRuntime against the Dobby stand-in (real runc) on a private dbus-daemon: what is Dobby's own
(its D-Bus API, its bundle conversion, its absence). What every runtime does alike is
tests/contract/test_runtime_contract.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_bundle

from dsm_tr181.containerspec.defaults import DEFAULT_CAPABILITIES
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerExit, PausableRuntime, StartSpec
from dsm_tr181.runtimes.dobby import DobbyRuntime, DobbyRuntimeConfig, exit_from_wait_status
from tests.support.dbusdaemon import PrivateBus, gdbus_call, private_bus
from tests.support.dobby_standin import running_standin
from tests.support.processes import stop_process
from tests.support.specs import spec_of

CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6,
        "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18,
        "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31}  # fmt: skip

_MISSING = [tool for tool in ("dbus-daemon", "runc", "gdbus") if shutil.which(tool) is None]
NEEDS_BUS_AND_RUNC = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_MISSING), reason=f"missing {', '.join(_MISSING)}"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason=f"{BUSYBOX} (busybox-static) is missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc runs the sample bundles as root"),
]

# Exits 0 on SIGTERM; `wait` (unlike a foreground sleep) is interrupted by the trap.
GRACEFUL = "echo hello from busybox; trap 'exit 0' TERM; sleep 3600 & wait"
STUBBORN = "trap '' TERM; sleep 3600 & wait"
EXITS_3 = "echo bye; exit 3"


class Exits:
    """Collects what watch() reports and lets a test wait for one container's exit."""

    def __init__(self) -> None:
        self.seen: list[ContainerExit] = []
        self.off_loop: list[ContainerExit] = []  # delivered on another thread: a bug
        self._loop_thread = threading.current_thread()
        self._changed = asyncio.Event()

    def __call__(self, exit_: ContainerExit) -> None:
        if threading.current_thread() is not self._loop_thread:
            self.off_loop.append(exit_)
        self.seen.append(exit_)
        self._changed.set()

    async def of(self, container_id: str, timeout: float = 10.0) -> ContainerExit:
        async with asyncio.timeout(timeout):
            while True:
                assert not self.off_loop, "watch() called back outside the asyncio loop"
                for exit_ in self.seen:
                    if exit_.container_id == container_id:
                        return exit_
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    with private_bus() as running:
        yield running


@pytest.fixture
def standin_dir(tmp_path: Path) -> Path:
    return tmp_path / "dobby"


@asynccontextmanager
async def dobby_runtime(bus: PrivateBus, **settings: object) -> AsyncIterator[tuple[DobbyRuntime, Exits]]:
    config = DobbyRuntimeConfig.from_config({"bus_address": bus.address, **settings})
    runtime = DobbyRuntime(config, work=bus.directory / "dsm-dobby")
    exits = Exits()
    runtime.watch(exits)
    try:
        yield runtime, exits
    finally:
        await runtime.close()


def spec_for(tmp_path: Path, container_id: str, script: str) -> StartSpec:
    bundle = make_bundle(tmp_path / "bundles" / container_id, args=("/bin/sh", "-c", script))
    config = spec_of(bundle, container_id)
    return StartSpec(container_id=container_id, config=config, log_path=tmp_path / "logs" / f"{container_id}.log")


# --- without a bus ------------------------------------------------------------------------------


@pytest.mark.unit
def test_config_rejects_unknown_keys_and_wrong_types() -> None:
    config = DobbyRuntimeConfig.from_config({"call_timeout": 3, "service": "org.rdk.dobby", "id_prefix": ""})
    assert config.call_timeout == 3.0 and config.id_prefix == ""
    for section in (
        {"bus": "unix:path=/x"},
        {"call_timeout": "10"},
        {"call_timeout": True},
        {"start_timeout": 0},
        {"service": 7},
        {"object_path": "org/rdk/dobby"},
        {"bus_address": "not an address"},
        {"id_prefix": "dsm/"},
    ):
        with pytest.raises(ValueError, match=r"runtime\.dobby[.:]"):
            DobbyRuntimeConfig.from_config(section)


@pytest.mark.unit
def test_wait_status_decodes_to_exit_code_or_signal() -> None:
    assert exit_from_wait_status("a", 3 << 8) == ContainerExit("a", exit_status=3)
    assert exit_from_wait_status("a", signal.SIGKILL) == ContainerExit("a", exit_status=None, signal=signal.SIGKILL)


@pytest.mark.unit
def test_runtime_declares_pause() -> None:
    assert isinstance(DobbyRuntime(), PausableRuntime)


# --- through the stand-in ---------------------------------------------------------------------


class TestThroughTheBus:
    pytestmark = NEEDS_BUS_AND_RUNC

    def test_containers_are_dobbys_own_listed_with_the_id_prefix(
        self, bus: PrivateBus, standin_dir: Path, tmp_path: Path
    ) -> None:
        spec = spec_for(tmp_path, "web", GRACEFUL)

        async def scenario() -> None:
            async with dobby_runtime(bus) as (runtime, _exits):
                await runtime.start(spec)
                # Any D-Bus client sees Dobby's API, called with explicit types.
                listed = await asyncio.to_thread(
                    gdbus_call, bus.address, "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1.List"
                )
                assert "'dsm-web'" in listed
                assert await runtime.list_ids() == ["web"]
                await runtime.stop("web", timeout=10)

        with running_standin(bus.address, standin_dir):
            asyncio.run(scenario())

    def test_runs_the_effective_spec_confined(self, bus: PrivateBus, standin_dir: Path, tmp_path: Path) -> None:
        """What Dobby is given is the confined spec, not the bundle: seen from the host."""
        bundle = make_bundle(tmp_path / "bundles" / "boxed", args=("/bin/sh", "-c", GRACEFUL))
        config = json.loads((bundle / "config.json").read_text())
        del config["process"]["capabilities"]  # the default set applies
        (bundle / "config.json").write_text(json.dumps(config))
        spec = StartSpec("boxed", spec_of(bundle, "boxed"), tmp_path / "logs" / "boxed.log")

        async def scenario() -> None:
            async with dobby_runtime(bus) as (runtime, _exits):
                pid = (await runtime.start(spec)).pid
                status = dict(
                    line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
                )
                effective = int(status["CapEff"], 16)
                assert effective == sum(1 << CAPS[name] for name in DEFAULT_CAPABILITIES)
                assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
                for kind in ("pid", "net", "mnt", "ipc", "uts"):
                    assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
                await runtime.stop("boxed", timeout=5)

        with running_standin(bus.address, standin_dir):
            asyncio.run(scenario())
        assert "config-dobby.json" not in os.listdir(bundle)  # the DU's bundle is never touched

    def test_exit_code_reported_and_log_rotated_on_restart(
        self, bus: PrivateBus, standin_dir: Path, tmp_path: Path
    ) -> None:
        spec = spec_for(tmp_path, "batch", EXITS_3)

        async def scenario() -> None:
            async with dobby_runtime(bus) as (runtime, exits):
                await runtime.start(spec)
                assert await exits.of("batch") == ContainerExit("batch", exit_status=3)
                assert await runtime.list_ids() == []
                exits.seen.clear()
                # Dobby has converted the bundle (config-dobby.json); a second start still logs.
                await runtime.start(spec)
                assert await exits.of("batch") == ContainerExit("batch", exit_status=3)

        with running_standin(bus.address, standin_dir):
            asyncio.run(scenario())
        # The bundle Dobby ran is the adapter's own, converted by Dobby; the DU's is untouched.
        assert (bus.directory / "dsm-dobby" / "bundles" / "batch" / "config-dobby.json").exists()
        assert not (tmp_path / "bundles" / "batch" / "config-dobby.json").exists()
        assert "bye" in spec.log_path.read_text()
        assert "bye" in spec.log_path.with_name("batch.log.1").read_text()

    def test_calls_fail_fast_when_dobby_is_gone(self, bus: PrivateBus, standin_dir: Path, tmp_path: Path) -> None:
        spec = spec_for(tmp_path, "orphan", GRACEFUL)

        async def scenario() -> None:
            async with dobby_runtime(bus, call_timeout=1) as (runtime, exits):
                with running_standin(bus.address, standin_dir) as standin:
                    await runtime.start(spec)
                    standin.send_signal(signal.SIGSTOP)  # hung: calls time out
                    try:
                        with pytest.raises(Fault, match="Dobby not available: no answer"):
                            await runtime.status("orphan")
                    finally:
                        standin.send_signal(signal.SIGCONT)
                    stop_process(standin)
                # Its owner left the bus: the container is reported gone.
                assert await exits.of("orphan") == ContainerExit("orphan", exit_status=None)
                began = time.monotonic()
                for call in (runtime.status("orphan"), runtime.list_ids(), runtime.stop("orphan", 5)):
                    with pytest.raises(Fault, match="Dobby not available") as caught:
                        await call
                    assert caught.value.code is FaultCode.INTERNAL_ERROR
                assert time.monotonic() - began < 1

            nowhere = PrivateBus(address=f"unix:path={tmp_path}/no-bus", pid=0, directory=tmp_path)
            async with dobby_runtime(nowhere) as (runtime, _exits):
                with pytest.raises(Fault, match="Dobby not available: cannot connect"):
                    await runtime.list_ids()

        asyncio.run(scenario())
