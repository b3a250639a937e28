"""A runtime from another distribution: tests/plugins/dsm-chroot-runtime, installed into the test
environment by bootstrap.sh, registers ``chroot`` in the ``dsm_tr181.runtimes`` entry point group.
The real daemon, configured with ``runtime = "chroot"``, runs an EU on it: nothing in this
repository's package names it."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dsm_tr181 import adapters
from dsm_tr181.errors import AdapterUnavailable
from tests.integration.lcm_helpers import (
    EE,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

PLUGIN = "dsm-chroot-runtime"


def _plugin_installed() -> bool:
    return any(entry.name == "chroot" for entry in entry_points(group="dsm_tr181.runtimes"))


needs_plugin = pytest.mark.skipif(
    not _plugin_installed(), reason=f"{PLUGIN} is not installed (bootstrap.sh: pip install -e tests/plugins/{PLUGIN})"
)


@pytest.mark.unit
@needs_plugin
def test_the_plugin_is_found_by_its_entry_point_and_nothing_else() -> None:
    entry = next(e for e in entry_points(group="dsm_tr181.runtimes") if e.name == "chroot")
    assert entry.dist is not None and entry.dist.name == PLUGIN
    cls = adapters.load("runtime", "chroot")
    assert cls.__module__ == "dsm_chroot_runtime"
    assert not Path(cls.__module__.replace(".", "/")).is_relative_to("dsm_tr181")
    with pytest.raises(ValueError, match=r"runtime\.chroot"):
        adapters.create("runtime", "chroot", {"kill_timeout": "soon"}, adapters.AdapterContext("chroot", Path("/x")))


@pytest.mark.unit
def test_unknown_and_broken_adapters_are_named() -> None:
    with pytest.raises(AdapterUnavailable, match=r"no runtime adapter named 'nope' \(known: .*runc"):
        adapters.load("runtime", "nope")
    with pytest.raises(AdapterUnavailable, match="no adapter kind 'engine'"):
        adapters.names("engine")


@pytest.mark.integration
@needs_plugin
@needs_runc  # for the busybox bundle only: the plug-in runs it without runc
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_daemon_runs_an_execenv_on_the_plugin_runtime(tmp_path: Path) -> None:
    # No /dev in a bare chroot: no background job (sh redirects its stdin from /dev/null).
    service = ("/bin/sh", "-c", "echo hello from plugged 1.0.0; exec sleep 3600")
    archive = build_du(tmp_path / "archives", "plugged", args=service)
    dsm = DsmDaemon(tmp_path, execenvs=[{"name": "plugged", "runtime": "chroot"}]).start()
    try:
        assert value(dsm, EE + "1.Type") == "OCI runtime (chroot)"
        done = install(dsm, str(archive))
        assert done.ok, done.fault
        eu = eu_of(dsm, str(done.event["DeploymentUnitRef"]) + ".")  # type: ignore[index]
        assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
        wait_status(dsm, eu, "Active")
        euid = value(dsm, eu + "EUID")
        log_file = dsm.state / "logs" / f"{euid}.log"
        eventually(lambda: log_file.exists() and "hello from plugged 1.0.0" in log_file.read_text(), what="output")
        pid_files = list((dsm.state / "execenvs" / "plugged" / "chroot").iterdir())  # the plug-in's own state
        assert len(pid_files) == 1
        assert Path(f"/proc/{pid_files[0].read_text()}").exists()
        assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Idle"}).ok
        wait_status(dsm, eu, "Idle")
        assert not pid_files[0].exists()
    finally:
        dsm.cleanup()
