"""Per-EU network modes (``NetworkConfig.X_RDKCENTRAL-COM_NetworkMode`` and 2.20's
``NetworkConfig.ShareParentNetwork``), in network namespaces the test creates: the daemon
runs in a "device" namespace holding a link of the test's; EUs are real runc containers.
A ``None`` EU has only loopback; a ``ShareParent`` EU sees the device's links only in the
ExecEnvs whose policy allows it (or whose ``network`` is ``host``) and is refused (7002) in
the other; a ``Bridged`` EU has its own interface on the bridge as before. Each EU's mode is
served on its row and kept in the store (the same after a daemon restart)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from dsm_tr181.config import default_instance_name
from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
    build_du,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    rows,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pyroute2 = pytest.importorskip("pyroute2")
pytestmark = [
    pytest.mark.integration,
    needs_runc,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter (util-linux)"),
]

MODE = "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode"
SHARE = "NetworkConfig.ShareParentNetwork"
EE2, EE3 = "Device.SoftwareModules.ExecEnv.2", "Device.SoftwareModules.ExecEnv.3"
# The EU prints its network interfaces (from its own /proc/net/dev) and waits.
REPORT = "trap 'exit 0' TERM; echo links: $(tail -n +3 /proc/net/dev | cut -d: -f1) end; sleep 3600 & wait"


@dataclass
class Lab:
    device: str
    link: str  # a link of the device namespace, named by the test
    dsm: DsmDaemon
    dus: dict[str, str] = field(default_factory=dict)  # EU row -> its DU's


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("netmodes")
    tag = f"{os.getpid() % 100000}"
    device, link = f"dsmt-modes-{tag}", f"dm{tag}"
    pyroute2.netns.create(device)
    execenvs = [
        {"name": "default", "network": "bridged", "subnet": "10.89.8.0/24"},
        {"name": "open", "network": "none", "allow_share_parent_network": True},
        {"name": "hostnet", "network": "host"},  # the operator's decision: the host's network
    ]
    dsm = DsmDaemon(work, execenvs=execenvs)
    try:
        with pyroute2.NetNS(device) as ns:
            ns.link("add", ifname=link, kind="veth", peer=link + "p")  # no dummy module on every kernel
        dsm.start(prefix=["nsenter", f"--net=/run/netns/{device}", "--"])
        yield Lab(device, link, dsm)
    finally:
        dsm.cleanup()
        instance = default_instance_name(dsm.state)  # a failed test may leave EU namespaces behind
        for namespace in [device, *(n for n in pyroute2.netns.listnetns() if n.startswith(instance + "-"))]:
            pyroute2.netns.remove(namespace)


def links_of(lab: Lab, name: str, **inputs: object) -> tuple[str, list[str]]:
    """Install and start an EU; its row and the links it sees."""
    outcome = install(lab.dsm, build_du(lab.dsm.work, name, args=("/bin/sh", "-c", REPORT)).as_uri(), **inputs)
    assert outcome.ok, outcome
    du = outcome.event["DeploymentUnitRef"]  # type: ignore[index]
    eu = eu_of(lab.dsm, du + ".")
    lab.dus[eu] = du
    assert operate(lab.dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(lab.dsm, eu, "Active")
    log = lab.dsm.state / "logs" / f"{value(lab.dsm, eu + 'EUID')}.log"
    line = eventually(lambda: log.exists() and _report(log.read_text()), 20, "the EU's report")
    return eu, sorted(line.split()[1:-1])


def _report(text: str) -> str | None:
    return next((line for line in text.splitlines() if line.endswith(" end")), None)


def test_each_eu_gets_the_network_mode_it_asks_for(lab: Lab) -> None:
    bridged, seen = links_of(lab, "bridged")  # the ExecEnv's default: its bridge
    assert seen == ["eth0", "lo"], seen
    assert value(lab.dsm, bridged + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "Bridged"

    isolated, seen = links_of(lab, "isolated", **{MODE: "None"})
    assert seen == ["lo"], seen
    assert value(lab.dsm, isolated + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "None"

    # Sharing the parent's network: refused where the policy does not allow it, before any
    # download (the URL does not even exist), as the DUStateChange! outcome, leaving nothing...
    for ask in ({SHARE: True}, {MODE: "ShareParent"}):
        outcome = install(lab.dsm, (lab.dsm.work / "absent.tar").as_uri(), **ask)
        assert outcome.fault is not None and outcome.fault["code"] == FaultCode.REQUEST_DENIED.usp, outcome
        assert "does not allow units to share its network" in outcome.fault["message"]
        assert outcome.event is not None and outcome.event["CurrentState"] == "Failed", outcome
    assert len(rows(lab.dsm, DU)) == 2
    # ... and done where it does: the EU sees the device's own links.
    shared, seen = links_of(lab, "sharer", ExecutionEnvRef=EE2, **{SHARE: True})
    assert lab.link in seen and "lo" in seen, seen
    assert value(lab.dsm, shared + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "ShareParent"

    # A host ExecEnv: its EUs share the device's network by default, or ask for None.
    hosted, seen = links_of(lab, "hosted", ExecutionEnvRef=EE3)
    assert lab.link in seen, seen
    assert value(lab.dsm, hosted + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "ShareParent"
    _, seen = links_of(lab, "hosted-alone", ExecutionEnvRef=EE3, **{MODE: "None"})
    assert seen == ["lo"], seen

    # Inputs that contradict each other, and a bridge the ExecEnv does not have, are refused.
    archive = build_du(lab.dsm.work, "refused", args=("/bin/sh", "-c", REPORT))
    outcome = install(lab.dsm, archive.as_uri(), ExecutionEnvRef=EE2, **{SHARE: True, MODE: "None"})
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.INVALID_ARGUMENTS.usp, outcome
    outcome = install(lab.dsm, (lab.dsm.work / "absent.tar").as_uri(), ExecutionEnvRef=EE2, **{MODE: "Bridged"})
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.REQUEST_DENIED.usp, outcome
    assert "has no bridged network" in outcome.fault["message"]

    # Update() changes the mode (None -> Bridged: an address, its interface on the bridge).
    du = lab.dus[isolated]
    update = build_du(lab.dsm.work, "isolated", version="2.0", args=("/bin/sh", "-c", REPORT))
    assert operate(lab.dsm, du + ".Update()", {"URL": update.as_uri(), MODE: "Bridged"}).ok
    assert value(lab.dsm, isolated + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") == "Bridged"
    log = lab.dsm.state / "logs" / f"{value(lab.dsm, isolated + 'EUID')}.log"
    eventually(lambda: log.read_text().count(" end") == 2, 20, "the updated EU's report")
    assert sorted(log.read_text().splitlines()[-1].split()[1:-1]) == ["eth0", "lo"]

    # The modes are kept in the store.
    lab.dsm.stop()
    lab.dsm.start(prefix=["nsenter", f"--net=/run/netns/{lab.device}", "--"])
    modes = [value(lab.dsm, eu + "NetworkConfig.X_RDKCENTRAL-COM_NetworkMode") for eu in (bridged, isolated, shared)]
    assert modes == ["Bridged", "Bridged", "ShareParent"]
    for path in rows(lab.dsm, DU):
        assert operate(lab.dsm, path + "Uninstall()").ok
