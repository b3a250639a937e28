"""Bridged EU networking in network namespaces the test creates (pyroute2): the daemon runs
in a "device" namespace joined by a veth pair to an "upstream" namespace holding an HTTP
server; EUs (real runc, busybox) live on the device's bridge. No packet leaves these
namespaces. Checked from the namespaces themselves: two EUs reach each other, an EU
reaches the upstream server through the NAT (the upstream has no route back to the EUs'
subnet), a port mapping reaches an EU's server from upstream and from the device; after
uninstall, and after a kill -9 + restart, no namespace, link or rule of the daemon's is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.config import default_instance_name
from tests.integration.lcm_helpers import (
    DU,
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

SUBNET = "10.89.7."
UPSTREAM = "192.0.2.2"
SERVER = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"


@dataclass
class Lab:
    device: str  # the device's network namespace (the daemon runs there)
    upstream: str
    dsm: DsmDaemon

    def run(self, namespace: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net=/run/netns/{namespace}", *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip

    def leftovers(self) -> list[str]:
        """The daemon's namespaces, links and tagged rules still there."""
        instance = default_instance_name(self.dsm.state)
        found = [f"netns {n}" for n in pyroute2.netns.listnetns() if n.startswith(instance + "-")]
        links = self.run(self.device, "ip", "-o", "link").stdout.splitlines()
        found += [
            f"link {line.split(':')[1].strip()}" for line in links if ": dsm" in line and "dsm-default" not in line
        ]
        for table in ("filter", "nat"):
            rules = self.run(self.device, "iptables", "-t", table, "-S").stdout.splitlines()
            found += [rule for rule in rules if f"dsm:{instance}:" in rule and f"dsm:{instance}:bridge" not in rule]
        return found


def _veth(device: str, upstream: str, name: str) -> None:
    with pyroute2.IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": upstream})
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=device)
    for namespace, ifname, address in ((device, name, "192.0.2.1"), (upstream, "eth0", UPSTREAM)):
        with pyroute2.NetNS(namespace) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            index = ns.link_lookup(ifname=ifname)[0]
            ns.addr("add", index=index, address=address, prefixlen=24)
            ns.link("set", index=index, state="up")


def _archive(work: Path, name: str, script: str, page: str = "") -> str:
    source = work / "src" / name
    shutil.rmtree(source, ignore_errors=True)
    make_bundle(source, args=("/bin/sh", "-c", script))
    config = json.loads((source / "config.json").read_text())
    for kind in ("bounding", "effective", "permitted"):  # ping's raw socket (in the default set)
        config["process"]["capabilities"][kind].append("CAP_NET_RAW")
    (source / "config.json").write_text(json.dumps(config))
    for applet in ("ping", "wget"):
        (source / "rootfs" / "bin" / applet).symlink_to("busybox")
    if page:
        (source / "rootfs" / "www").mkdir()
        (source / "rootfs" / "www" / "index.html").write_text(page)
    return make_archive(source, work / f"{name}.tar").as_uri()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("network")
    tag = f"{os.getpid() % 100000}"
    device, upstream = f"dsmt-dev-{tag}", f"dsmt-up-{tag}"
    pyroute2.netns.create(device)
    pyroute2.netns.create(upstream)
    server = None
    dsm = DsmDaemon(work, execenvs=[{"name": "default", "network": "bridged", "subnet": SUBNET + "0/24",
                                     "dns": [UPSTREAM]}])  # fmt: skip
    try:
        _veth(device, upstream, f"dt{tag}")
        (work / "www").mkdir()
        (work / "www" / "index.html").write_text("upstream-ok\n")
        server = subprocess.Popen(["nsenter", f"--net=/run/netns/{upstream}", "busybox", "httpd", "-f", "-p",
                                   f"{UPSTREAM}:8080", "-h", str(work / "www")])  # fmt: skip
        dsm.start(prefix=["nsenter", f"--net=/run/netns/{device}", "--"])
        yield Lab(device, upstream, dsm)
    finally:
        dsm.cleanup()
        if server is not None:
            server.kill()
            server.wait()
        instance = default_instance_name(dsm.state)  # a failed test may leave EU namespaces behind
        stale = [n for n in pyroute2.netns.listnetns() if n.startswith(instance + "-")]
        for namespace in (device, upstream, *stale):
            pyroute2.netns.remove(namespace)


def started(lab: Lab, name: str, script: str, page: str = "", **inputs: object) -> str:
    outcome = install(lab.dsm, _archive(lab.dsm.work, name, script, page), **inputs)
    assert outcome.ok, outcome
    eu = eu_of(lab.dsm, outcome.event["DeploymentUnitRef"] + ".")  # type: ignore[index]
    assert operate(lab.dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(lab.dsm, eu, "Active")
    return eu


def test_eus_talk_reach_upstream_through_nat_and_serve_a_mapped_port(lab: Lab) -> None:
    port = "NetworkConfig.PortMapping.1."
    mapping = {port + "Interface": "up0", port + "Protocol": "TCP", port + "ExternalPort": 8081,
               port + "InternalPort": 80}  # fmt: skip
    server = started(lab, "server", SERVER, page="eu-server-ok\n", **mapping)
    client_script = (
        f"trap 'exit 0' TERM; ping -c 1 -W 2 {SUBNET}2 >/dev/null && echo ping-ok; "
        f"wget -q -O - http://{SUBNET}2/; wget -q -O - http://{UPSTREAM}:8080/; cat /etc/resolv.conf; "
        "cat /etc/hosts; echo client-done; sleep 3600 & wait"
    )
    client = started(lab, "client", client_script)
    log = lab.dsm.state / "logs" / f"{value(lab.dsm, client + 'EUID')}.log"
    eventually(lambda: log.exists() and "client-done" in log.read_text(), 30, "the client's report")
    lines = log.read_text().splitlines()
    assert {"ping-ok", "eu-server-ok", "upstream-ok", f"nameserver {UPSTREAM}"} <= set(lines), lines
    assert f"{SUBNET}3\tdefault-2" in lines
    # The mapped port, from upstream (PREROUTING) and from the device itself (OUTPUT).
    for namespace in (lab.upstream, lab.device):
        fetched = lab.run(namespace, "busybox", "wget", "-q", "-O", "-", "http://192.0.2.1:8081/")
        assert fetched.stdout == "eu-server-ok\n", (namespace, fetched)
    assert value(lab.dsm, server + "NetworkConfig.PortMappingRefList") == ""
    for path in rows(lab.dsm, DU):
        assert operate(lab.dsm, path + "Uninstall()").ok
    assert lab.leftovers() == []


def test_leftovers_of_a_crash_are_swept_at_start(lab: Lab) -> None:
    eu = started(lab, "survivor", SERVER, page="still-here\n")
    instance = default_instance_name(lab.dsm.state)
    lab.dsm.kill9()
    # What a crash in the middle of an EU's network setup leaves: its namespace and a rule.
    stale = f"{instance}-default-99"
    pyroute2.netns.create(stale)
    lab.run(lab.device, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-m", "comment",
            "--comment", f"dsm:{instance}:default-99", "-j", "DNAT", "--to-destination", f"{SUBNET}99:80")  # fmt: skip
    lab.dsm.start(prefix=["nsenter", f"--net=/run/netns/{lab.device}", "--"])
    assert wait_status(lab.dsm, eu, "Active")
    left = lab.leftovers()
    assert not [item for item in left if "default-99" in item], left
    assert f"netns {instance}-{value(lab.dsm, eu + 'EUID')}" in left  # adopted: its network kept
    for path in rows(lab.dsm, DU):
        assert operate(lab.dsm, path + "Uninstall()").ok
    assert lab.leftovers() == []
