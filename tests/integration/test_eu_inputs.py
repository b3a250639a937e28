"""InstallDU()'s EnvVariable.{i} and HostObject.{i} inputs, seen from inside a real runc
container, and refused outside the ExecEnv's policy (real daemon)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    row,
    rows,
    tree_files,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

DEVICE = Path("/dev/kmsg")
SCRIPT = (
    "trap 'exit 0' TERM; echo GREETING=$GREETING; echo TERM=$TERM; cat /data/hello.txt; "
    "test -c /dev/hostdev && echo device-ok; (echo x > /data/new) 2>/dev/null || echo data-read-only; "
    "echo from-the-eu > /out/file && echo out-written; sleep 3600 & wait"
)


@pytest.fixture(scope="module")
def dsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DsmDaemon]:
    work = tmp_path_factory.mktemp("euinputs")
    (work / "shared" / "data").mkdir(parents=True)
    (work / "shared" / "out").mkdir()
    (work / "shared" / "data" / "hello.txt").write_text("hello from the host\n")
    execenvs = [{"name": "default", "allowed_host_paths": [str(work / "shared")], "allowed_devices": [str(DEVICE)]}]
    daemon = DsmDaemon(work, execenvs=execenvs)
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(autouse=True)
def uninstall_all(dsm: DsmDaemon) -> Iterator[None]:
    yield
    for path in rows(dsm, DU):
        operate(dsm, path + "Uninstall()")


@pytest.mark.skipif(not DEVICE.is_char_device(), reason=f"{DEVICE} is not a character device here")
def test_environment_and_host_objects_are_visible_inside(dsm: DsmDaemon) -> None:
    shared = dsm.work / "shared"
    inputs = {
        "EnvVariable.1.Key": "GREETING", "EnvVariable.1.Value": "hello world",
        "EnvVariable.2.Key": "TERM", "EnvVariable.2.Value": "dumb",
        "HostObject.1.Source": str(shared / "data"), "HostObject.1.Destination": "/data",
        "HostObject.2.Source": str(shared / "out"), "HostObject.2.Destination": "/out", "HostObject.2.Options": "rw",
        "HostObject.3.Source": str(DEVICE), "HostObject.3.Destination": "/dev/hostdev",
    }  # fmt: skip
    outcome = install(dsm, build_du(dsm.work, "inputs", args=("/bin/sh", "-c", SCRIPT)).as_uri(), **inputs)
    assert outcome.ok, outcome
    eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    assert row(dsm, eu + "EnvVariable.1.")["Key"] == "GREETING"
    assert row(dsm, eu + "HostObject.3.")["Destination"] == "/dev/hostdev"
    assert value(dsm, eu + "HostObjectNumberOfEntries") == "3"
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")
    log = dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"
    eventually(lambda: "out-written" in log.read_text(), 20, "the container's report")
    lines = log.read_text().splitlines()
    assert lines[:3] == ["GREETING=hello world", "TERM=dumb", "hello from the host"]
    assert {"device-ok", "data-read-only", "out-written"} <= set(lines)
    assert (shared / "out" / "file").read_text() == "from-the-eu\n"
    assert not (shared / "data" / "new").exists()


@pytest.mark.parametrize(
    ("source", "named"),
    [("/etc", "host path /etc"), ("/dev/mem", "device /dev/mem")],
)
def test_a_host_object_outside_the_allow_list_is_refused(dsm: DsmDaemon, source: str, named: str) -> None:
    archive = build_du(dsm.work, "outside", args=("/bin/true",))
    outcome = install(dsm, archive.as_uri(), **{"HostObject.1.Source": source, "HostObject.1.Destination": "/x"})
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DU_EE_MISMATCH.usp, outcome
    assert named in outcome.fault["message"]
    assert rows(dsm, DU) == []
    assert tree_files(dsm.state / "bundles") == []


def test_access_interfaces_and_port_mappings_without_a_bridge_are_refused_not_ignored(dsm: DsmDaemon) -> None:
    archive = build_du(dsm.work, "unsupported", args=("/bin/true",))
    # AccessInterfaces must be in the ExecEnv's AvailableAccessInterfaces: empty here, as no
    # Device.IP.Interface row is served for it to reference.
    assert value(dsm, "Device.SoftwareModules.ExecEnv.1.AvailableAccessInterfaces") == ""
    outcome = install(dsm, archive.as_uri(), **{"NetworkConfig.AccessInterfaces": "eth0,wan0"})
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DU_EE_MISMATCH.usp, outcome
    assert "AccessInterfaces eth0, wan0: not in the ExecEnv's AvailableAccessInterfaces" in outcome.fault["message"]
    assert "Device.IP.Interface" in outcome.fault["message"]
    assert rows(dsm, DU) == []
    # A port mapping needs an ExecEnv with bridged networking; this one has none.
    port = "NetworkConfig.PortMapping.1."
    mapping = {port + "Interface": "eth0", port + "ExternalPort": 8080, port + "InternalPort": 80,
               port + "Protocol": "TCP"}  # fmt: skip
    outcome = install(dsm, archive.as_uri(), **mapping)
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.REQUEST_DENIED.usp, outcome
    assert "no bridged network" in outcome.fault["message"]
    # An empty AccessInterfaces ("no outgoing network access is required") is accepted; the EU
    # serves empty reference lists (Device.IP.Interface and Device.NAT.PortMapping are not served).
    outcome = install(dsm, archive.as_uri(), **{"NetworkConfig.AccessInterfaces": ""})
    assert outcome.ok, outcome
    eu = eu_of(dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    assert value(dsm, eu + "NetworkConfig.AccessInterfaceRefList") == ""
    assert value(dsm, eu + "NetworkConfig.PortMappingRefList") == ""
    assert value(dsm, eu + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "None"  # the ExecEnv's default
    assert operate(dsm, outcome.event["DeploymentUnitRef"] + ".Uninstall()").ok
    assert rows(dsm, DU) == [] and tree_files(dsm.state / "bundles") == []
