"""The runc / crun adapter against real containers (busybox bundles, no mocks).

Every container test runs twice: with runc, and with crun inside a private mount
namespace where only cgroup2 is mounted at /sys/fs/cgroup (``cgroup2_mount_namespace``;
Debian's crun refuses the hybrid layout of the host otherwise). Assertions about what
the runtime holds use its own CLI directly, not the adapter. What every runtime does alike
is tests/contract/test_runtime_contract.py; this module keeps what is runc's and crun's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_bundle

from dsm_tr181.containerspec import ConfinementPolicy
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import ContainerExit, ContainerState, RuntimeUnavailable, StartSpec
from dsm_tr181.runtimes.container_ids import check_container_id
from dsm_tr181.runtimes.logrotate import LogPolicy, backup_path, rotate_if_needed
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig
from tests.support.specs import spec_of

FLAVOURS: dict[str, dict[str, Any]] = {
    "runc": {"binary": "runc"},
    # Without CAP_SYS_RESOURCE crun cannot load its cgroup-v2 device filter (see device_rules).
    "crun": {"binary": "crun", "cgroup2_mount_namespace": True, "device_rules": False},
}
# The namespace trampoline, spelt out independently of the adapter's.
CGROUP2_NS = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
CGROUP2_SCRIPT = 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"'
SLEEPER = ("/bin/sh", "-c", "echo hello from busybox; exec sleep 3600")  # pid-1 sleep: ignores SIGTERM


def unavailable(flavour: str) -> str | None:
    if os.geteuid() != 0:
        return "running containers needs root"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    needs = ["runc"] if flavour == "runc" else ["crun", "unshare", "mount"]
    missing = [name for name in needs if shutil.which(name) is None]
    return f"{', '.join(missing)} not installed" if missing else None


class Exits:
    """Collects watch() reports."""

    def __init__(self) -> None:
        self.seen: list[ContainerExit] = []
        self._arrived = asyncio.Event()

    def __call__(self, event: ContainerExit) -> None:
        self.seen.append(event)
        self._arrived.set()

    async def of(self, container_id: str, timeout: float = 10.0) -> ContainerExit:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.seen:
                    if event.container_id == container_id:
                        return event
                self._arrived.clear()
                await self._arrived.wait()


@dataclass
class Harness:
    flavour: str
    tmp: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def root(self) -> Path:
        return self.tmp / "runtime-root"

    def config(self) -> OciRuntimeConfig:
        return OciRuntimeConfig.from_config({**FLAVOURS[self.flavour], "root": str(self.root), **self.settings})

    def runtime(self) -> tuple[OciRuntime, Exits]:
        runtime, exits = OciRuntime(self.config(), self.state_dir), Exits()
        runtime.watch(exits)
        return runtime, exits

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The runtime's own CLI on the test's root."""
        argv = [self.flavour, "--root", str(self.root / self.state_dir.name), *args]  # <root>/<ExecEnv>
        if self.flavour == "crun":
            argv = [*CGROUP2_NS, CGROUP2_SCRIPT, "sh", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def listed(self) -> dict[str, dict[str, Any]]:
        result = self.cli("list", "--format", "json")
        assert result.returncode == 0, result.stderr
        return {entry["id"]: entry for entry in json.loads(result.stdout) or []}

    def bundle(self, name: str, args: tuple[str, ...], control: Path | None = None) -> Path:
        """A busybox bundle; ``control`` is bind-mounted at /ctl for the test to signal through."""
        bundle = make_bundle(self.tmp / "bundles" / name, args=args)
        if control is not None:
            (bundle / "rootfs" / "ctl").mkdir()
            config = json.loads((bundle / "config.json").read_text())
            config["mounts"].append(
                {"destination": "/ctl", "type": "bind", "source": str(control), "options": ["rbind"]}
            )
            (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    def spec(self, container_id: str, bundle: Path, log: Path | None = None, **kwargs: Any) -> StartSpec:
        """The spec the LCM would derive (the test's own directory may be bind-mounted)."""
        config = spec_of(bundle, container_id, policy=ConfinementPolicy(allowed_host_paths=(str(self.tmp),)))
        return StartSpec(container_id, config, log or self.tmp / "logs" / f"{container_id}.log", **kwargs)

    def clean_up(self) -> None:
        """Delete every container of the root and reap the inits that were our children."""
        pids = []
        for container_id, entry in self.listed().items():
            pids.append(entry["pid"])
            self.cli("delete", "--force", container_id)
        deadline = time.monotonic() + 5
        for pid in pids:
            while pid > 0 and time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.02)


@pytest.fixture(params=list(FLAVOURS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        harness.clean_up()
    assert harness.listed() == {}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def log_has(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.exists() and text in path.read_text(errors="replace")


# -- containers ---------------------------------------------------------------------


@pytest.mark.integration
def test_death_by_signal_is_reported(harness: Harness) -> None:
    spec = harness.spec("victim", harness.bundle("victim", SLEEPER))

    async def scenario() -> None:
        runtime, exits = harness.runtime()
        await runtime.start(spec)
        assert harness.cli("kill", "victim", "KILL").returncode == 0
        assert await exits.of("victim") == ContainerExit("victim", None, signal=9)
        await runtime.stop("victim", timeout=1)  # stopped already: just deleted
        assert harness.listed() == {}
        await runtime.close()

    run(scenario)


@pytest.mark.integration
def test_start_clears_a_stopped_leftover_and_refuses_a_live_one(harness: Harness) -> None:
    spec = harness.spec("again", harness.bundle("again", ("/bin/sh", "-c", "exit 0")))

    async def scenario() -> None:
        runtime, exits = harness.runtime()
        await runtime.start(spec)
        await exits.of("again")
        assert harness.listed()["again"]["status"] == "stopped"  # left in the root
        exits.seen.clear()
        await runtime.start(spec)  # the stopped one is deleted first
        await exits.of("again")
        await runtime.remove("again")
        live = harness.spec("live", harness.bundle("live", SLEEPER))
        await runtime.start(live)
        with pytest.raises(Fault) as caught:
            await runtime.start(live)
        assert caught.value.code is FaultCode.COMMAND_FAILURE
        await runtime.remove("live")
        await runtime.close()

    run(scenario)


@pytest.mark.integration
def test_failed_start_raises_and_leaves_nothing(harness: Harness) -> None:
    spec = harness.spec("broken", harness.bundle("broken", ("/no/such/binary",)))

    async def scenario() -> None:
        runtime, exits = harness.runtime()
        with pytest.raises(Fault) as caught:
            await runtime.start(spec)
        assert caught.value.code is FaultCode.COMMAND_FAILURE
        assert "/no/such/binary" in caught.value.message
        assert harness.listed() == {}
        assert await runtime.list_ids() == []
        assert (await runtime.status("broken")).state is ContainerState.ABSENT

        file = harness.tmp / "a-file"
        file.touch()
        unwritable = harness.spec("unlogged", harness.bundle("unlogged", SLEEPER), file / "unlogged.log")
        with pytest.raises(Fault) as caught:
            await runtime.start(unwritable)
        assert caught.value.code is FaultCode.INTERNAL_ERROR
        assert harness.listed() == {}
        await asyncio.sleep(0.1)
        assert exits.seen == []
        await runtime.close()

    run(scenario)


@pytest.mark.integration
def test_log_rotation_bounds_the_size(harness: Harness) -> None:
    harness.settings["log_check_interval"] = 0.05
    limit, backups = 2048, 2
    chatty = ("/bin/sh", "-c", 'i=0; while :; do i=$((i+1)); echo "line $i ......................................"; '
              "sleep 0.005; done")  # fmt: skip
    spec = harness.spec("chatty", harness.bundle("chatty", chatty), log_max_bytes=limit, log_backups=backups)
    files = [spec.log_path, *(backup_path(spec.log_path, index) for index in range(1, backups + 2))]

    async def scenario() -> None:
        runtime, _ = harness.runtime()
        await runtime.start(spec)
        largest = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            largest = max(largest, sum(path.stat().st_size for path in files if path.exists()))
            await asyncio.sleep(0.02)
        await runtime.remove("chatty")
        await runtime.close()
        # Output piles up between checks (~0.5 KiB per interval here); allow a few late checks.
        assert largest <= (backups + 1) * limit + limit
        assert backup_path(spec.log_path, backups).exists()
        assert not backup_path(spec.log_path, backups + 1).exists()
        newest_backup = backup_path(spec.log_path, 1).read_text().splitlines()
        assert newest_backup and all(line.startswith("line ") for line in newest_backup)

    run(scenario)


# -- re-adoption after a daemon restart -------------------------------------------

WAIT_FOR_GO = "while [ ! -e /ctl/go ]; do sleep 0.02; done"


@pytest.mark.integration
def test_readoption_by_a_new_instance(harness: Harness) -> None:
    harness.settings["log_check_interval"] = 0.05
    control = harness.tmp / "control"
    control.mkdir()
    script = (
        f"echo waiting; {WAIT_FOR_GO}; i=0; while [ $i -lt 100 ]; do i=$((i+1)); "
        'echo "after restart $i ............................................"; done; '
        "while [ ! -e /ctl/done ]; do sleep 0.02; done; exit 3"
    )
    spec = harness.spec("survivor", harness.bundle("survivor", ("/bin/sh", "-c", script), control), log_max_bytes=2048)

    async def scenario() -> None:
        first, _ = harness.runtime()
        await first.start(spec)
        await first.close()  # the daemon goes away; the container does not

        second, exits = harness.runtime()
        assert await second.adopt() == ["survivor"]
        assert await second.adopt() == ["survivor"]  # already watched
        (control / "go").touch()
        # The log policy was restored: the new instance rotates the container's log.
        await wait_until(lambda: backup_path(spec.log_path, 1).exists())
        (control / "done").touch()
        # This process is still the parent (subreaper) of the init, so the status is known.
        assert await exits.of("survivor") == ContainerExit("survivor", 3)
        await second.remove("survivor")
        await second.close()

    run(scenario)


ADOPT_IN_ANOTHER_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig

async def main():
    config, state_dir, go = OciRuntimeConfig.from_config(json.loads(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
    runtime, exits = OciRuntime(config, state_dir), asyncio.Queue()
    runtime.watch(exits.put_nowait)
    adopted = await runtime.adopt()
    go.touch()
    event = await asyncio.wait_for(exits.get(), 10)
    await runtime.close()
    print(json.dumps({"adopted": adopted, "exit": [event.container_id, event.exit_status, event.signal]}))

asyncio.run(main())
"""


@pytest.mark.integration
def test_adopted_container_that_is_not_our_child(harness: Harness) -> None:
    control = harness.tmp / "control"
    control.mkdir()
    spec = harness.spec("orphan", harness.bundle("orphan", ("/bin/sh", "-c", f"{WAIT_FOR_GO}; exit 3"), control))
    settings = {**FLAVOURS[harness.flavour], "root": str(harness.root)}

    async def scenario() -> None:
        first, _ = harness.runtime()
        pid = (await first.start(spec)).pid
        await first.close()
        # A daemon restarted as a new process: the container's init is not its child.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ADOPT_IN_ANOTHER_PROCESS,
            json.dumps(settings), str(harness.state_dir), str(control / "go"),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await child.communicate()
        assert child.returncode == 0
        assert json.loads(out) == {"adopted": ["orphan"], "exit": ["orphan", None, None]}
        await wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid)  # it was ours: reap it

    run(scenario)


# -- configuration, ids, rotation ----------------------------------------------------


@pytest.mark.unit
def test_config_from_section() -> None:
    config = OciRuntimeConfig.from_config({"binary": "crun", "kill_timeout": 3, "cgroup2_mount_namespace": True})
    assert config == OciRuntimeConfig(binary="crun", kill_timeout=3.0, cgroup2_mount_namespace=True)
    assert OciRuntimeConfig.from_config({}) == OciRuntimeConfig()
    with pytest.raises(ValueError, match=r"runtime\.oci\.colour: unknown key"):
        OciRuntimeConfig.from_config({"colour": "blue"})
    with pytest.raises(ValueError, match=r"runtime\.oci\.systemd_cgroup: must be true or false, not 'yes'"):
        OciRuntimeConfig.from_config({"systemd_cgroup": "yes"})
    with pytest.raises(ValueError, match=r"runtime\.oci\.kill_timeout: must be a number, not True"):
        OciRuntimeConfig.from_config({"kill_timeout": True})
    with pytest.raises(ValueError, match=r"^runtime\.oci\.kill_timeout: must be >= 0"):
        OciRuntimeConfig.from_config({"kill_timeout": -1})


@pytest.mark.unit
def test_container_ids() -> None:
    for good in ("a", "eu-1.2_x", "A" * 128, "1a"):
        assert check_container_id(good) == good
    for bad in ("", "1", "a..b", "a/b", "A" * 129, "é"):
        with pytest.raises(Fault):
            check_container_id(bad)


@pytest.mark.unit
def test_rotation_keeps_whole_lines_and_shifts_backups(tmp_path: Path) -> None:
    policy = LogPolicy(tmp_path / "eu.log", max_bytes=100, backups=2)
    for round_ in range(3):
        policy.path.write_text("".join(f"round {round_} line {n}\n" for n in range(20)))
        assert rotate_if_needed(policy)
    assert policy.path.stat().st_size == 0
    newest = backup_path(policy.path, 1).read_text()
    assert len(newest) <= 100 and newest.startswith("round 2 line ") and newest.endswith("line 19\n")
    assert backup_path(policy.path, 2).read_text().startswith("round 1 line ")
    assert not backup_path(policy.path, 3).exists()
    assert not rotate_if_needed(policy)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is missing")
def test_a_vanished_runtime_binary_is_reported_unavailable(tmp_path: Path) -> None:
    """The LCM turns RuntimeUnavailable into an ExecEnv in Error (lcm/availability.py)."""
    binary = tmp_path / "bin" / "runc"
    binary.parent.mkdir()
    shutil.copy(shutil.which("runc") or "", binary)
    runtime = OciRuntime(OciRuntimeConfig(binary=str(binary)), tmp_path / "state")

    async def scenario() -> None:
        assert await runtime.list_ids() == []
        binary.unlink()
        with pytest.raises(RuntimeUnavailable, match=r"cannot run .*runc"):
            await runtime.list_ids()
        await runtime.close()

    asyncio.run(scenario())
