"""The back ends the runtime contract runs against, each behind one small interface.

A back end hands out runtime instances that share their state (a second instance is
the daemon after a restart) and cleans up what a test left behind. runc and crun use
the harness of tests/integration/test_runtime_oci.py (crun inside a private cgroup-v2
mount namespace); Dobby is the stand-in (real runc) on a private dbus-daemon, or the
real DobbyDaemon named by ``DSM_DOBBY_DAEMON`` (tests/support/dobby_real.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_bundle

from dsm_tr181.containerspec import ConfinementPolicy
from dsm_tr181.lcm.ports import Runtime, StartSpec
from dsm_tr181.runtimes.dobby import DobbyRuntime, DobbyRuntimeConfig
from tests.integration.test_runtime_oci import FLAVOURS, Harness, unavailable
from tests.support import dobby_real
from tests.support.dbusdaemon import PrivateBus, gdbus_call, private_bus
from tests.support.dobby_standin import running_standin
from tests.support.specs import spec_of

BACKENDS = (
    "runc",
    "crun",
    "dobby-standin",
    # `-m dobby_real` selects every test of the real DobbyDaemon, this one's too
    pytest.param("dobby-daemon", marks=pytest.mark.dobby_real),
)


class Backend(Protocol):
    name: str

    def runtime(self) -> Runtime:
        """A new instance over the back end's state (a daemon restarted)."""
        ...

    def spec(self, container_id: str, script: str) -> StartSpec:
        """The effective spec of a busybox bundle running ``/bin/sh -c script``."""
        ...


class OciBackend:
    def __init__(self, flavour: str, tmp: Path) -> None:
        self.name = flavour
        self.harness = Harness(flavour, tmp)

    def runtime(self) -> Runtime:
        from dsm_tr181.runtimes.oci import OciRuntime

        return OciRuntime(self.harness.config(), self.harness.state_dir)

    def spec(self, container_id: str, script: str) -> StartSpec:
        return self.harness.spec(container_id, self.harness.bundle(container_id, ("/bin/sh", "-c", script)))

    def leftovers(self) -> list[str]:
        return sorted(self.harness.listed())

    def clean_up(self) -> None:
        self.harness.clean_up()


class DobbyBackend:
    """DobbyRuntime on a Dobby (stand-in or real) that owns org.rdk.dobby on ``bus``."""

    def __init__(self, name: str, bus: PrivateBus, tmp: Path) -> None:
        self.name, self.bus, self.tmp = name, bus, tmp

    def runtime(self) -> Runtime:
        config = DobbyRuntimeConfig.from_config({"bus_address": self.bus.address, "call_timeout": 10})
        return DobbyRuntime(config, work=self.tmp / "dsm-dobby")

    def spec(self, container_id: str, script: str) -> StartSpec:
        bundle = make_bundle(self.tmp / "bundles" / container_id, args=("/bin/sh", "-c", script))
        config = spec_of(bundle, container_id, policy=ConfinementPolicy(allowed_host_paths=(str(self.tmp),)))
        return StartSpec(container_id, config, self.tmp / "logs" / f"{container_id}.log")

    def leftovers(self) -> list[str]:
        listed = gdbus_call(self.bus.address, "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1.List")
        return [] if "@as []" in listed or "[], []" in listed else [listed]

    def clean_up(self) -> None:
        pass  # the Dobby process removes its containers when it stops


def _container_tools_missing() -> str | None:
    if os.geteuid() != 0:
        return "running containers needs root"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    return None


@pytest.fixture(scope="module")
def dobby_bus() -> Iterator[PrivateBus]:
    """One private bus per module, shared by both Dobby back ends (their tests pick it up lazily)."""
    missing = [tool for tool in ("dbus-daemon", "gdbus") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    with private_bus() as bus:
        yield bus


@pytest.fixture(scope="module")
def standin(dobby_bus: PrivateBus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    if shutil.which("runc") is None:
        pytest.skip("runc not installed (the stand-in runs containers with it)")
    with running_standin(dobby_bus.address, tmp_path_factory.mktemp("standin")):
        yield dobby_bus


@pytest.fixture(scope="module")
def dobby_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """The real DobbyDaemon (tests/support/dobby_real.py) on a private bus of its own."""
    reason = dobby_real.missing()
    if reason:
        pytest.skip(f"the real DobbyDaemon: {reason}")
    with private_bus() as bus, dobby_real.running_dobby(bus.address, tmp_path_factory.mktemp("dobbydaemon")):
        yield bus


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    name: str = request.param
    reason = _container_tools_missing()
    if name in FLAVOURS:
        reason = reason or unavailable(name)
    if reason:
        pytest.skip(reason)
    chosen: OciBackend | DobbyBackend
    if name in FLAVOURS:
        chosen = OciBackend(name, tmp_path)
    else:
        bus = request.getfixturevalue("standin" if name == "dobby-standin" else "dobby_daemon")
        chosen = DobbyBackend(name, bus, tmp_path)
    try:
        yield chosen
    finally:
        chosen.clean_up()
    assert chosen.leftovers() == [], "the contract test left containers behind"
