"""Bridged networking with pyroute2 and iptables: a bridge per ExecEnv, a network namespace
and a veth pair per EU, NAT for outbound traffic and DNAT for port mappings.

Per ExecEnv (``network = "bridged"``): the bridge ``bridge`` holds the subnet's first
address (the EUs' gateway); IPv4 forwarding is on; one MASQUERADE rule covers traffic from
the subnet leaving by another interface. Per EU: the named namespace ``<instance>-<euid>``
(``/run/netns/``), a veth pair whose host end joins the bridge and whose other end is the
EU's ``eth0`` with its address and a default route via the gateway, and per port mapping a
DNAT rule (PREROUTING for traffic from outside, OUTPUT for the device itself) plus the
FORWARD accept it needs. Links, addresses and routes go through pyroute2 (inside a namespace
from a thread of its own that joined it: pyroute2's own namespace helpers fork the daemon,
and a forked asyncio process relays signals to its parent's loop); namespaces through
unshare(2)/setns(2) and a bind mount, as ``ip netns`` does; NAT rules through ``iptables``
(nf_tables or legacy, whichever the system's iptables is), each carrying the comment
``dsm:<instance>:<euid>`` so that teardown and the sweep at start find exactly this
daemon's rules.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import ipaddress
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsm_tr181.errors import Fault, FaultCode

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET, MS_BIND, MNT_DETACH = 0x40000000, 4096, 2
_libc = ctypes.CDLL(None, use_errno=True)
logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its debug output is per netlink message


def _netlink() -> Any:
    """pyroute2's netlink socket. pyroute2 costs the daemon ~20 MiB of RSS: it is imported
    when an ExecEnv with bridged networking first needs it, not when the daemon starts."""
    from pyroute2 import IPRoute as Netlink

    return Netlink()


class BridgedNetwork:
    def __init__(self, instance: str, bridge: str, subnet: str) -> None:
        self.instance, self.bridge = instance, bridge
        self.subnet = ipaddress.ip_network(subnet)
        self.gateway = next(self.subnet.hosts())
        self._rules_ensured = False  # the bridge's NAT/forward rules, checked once per bridge made

    # -- names ------------------------------------------------------------------------------

    def namespace(self, euid: str) -> str:
        return f"{self.instance}-{euid}"

    def namespace_path(self, euid: str) -> Path:
        return NETNS_DIR / self.namespace(euid)

    def _veth(self, euid: str) -> str:
        return "dsm" + hashlib.sha256(self.namespace(euid).encode()).hexdigest()[:10]  # <= 15 characters

    def _tag(self, euid: str) -> str:
        return f"dsm:{self.instance}:{euid}"

    # -- the ExecEnv --------------------------------------------------------------------------

    def ensure_bridge(self) -> None:
        with _netlink() as ipr:
            found = ipr.link_lookup(ifname=self.bridge)
            if not found:
                ipr.link("add", ifname=self.bridge, kind="bridge")
                found = ipr.link_lookup(ifname=self.bridge)
                self._rules_ensured = False
            index = found[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
            if str(self.gateway) not in have:
                ipr.addr("add", index=index, address=str(self.gateway), prefixlen=self.subnet.prefixlen)
            ipr.link("set", index=index, state="up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        if self._rules_ensured:  # three iptables processes per EU start otherwise (bench/service_bench.py)
            return
        tag = ["-m", "comment", "--comment", f"dsm:{self.instance}:bridge"]
        _ensure_rule("nat", "POSTROUTING", ["-s", str(self.subnet), "!", "-o", self.bridge, "-j", "MASQUERADE", *tag])
        _ensure_rule("filter", "FORWARD", ["-i", self.bridge, "-j", "ACCEPT", *tag])
        _ensure_rule("filter", "FORWARD", ["-o", self.bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                           "-j", "ACCEPT", *tag])  # fmt: skip
        self._rules_ensured = True

    # -- an EU -----------------------------------------------------------------------------------

    def attach(self, euid: str, address: str, mappings: tuple[tuple[str, int, int], ...]) -> None:
        """The EU's namespace, link, address, route and rules (anything left from before is replaced)."""
        name, veth = self.namespace(euid), self._veth(euid)
        try:
            # Leftovers exist only with the namespace: attach makes it first and its rules last,
            # detach removes them in the opposite order (so a new EU costs no iptables listing).
            if self.namespace_path(euid).exists():
                self.detach(euid)
            self.ensure_bridge()
            _in_thread(lambda: _create_namespace(name))
            with _netlink() as ipr:
                ipr.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
                index = ipr.link_lookup(ifname=veth)[0]
                ipr.link("set", index=index, master=ipr.link_lookup(ifname=self.bridge)[0], state="up")

            def inside() -> None:
                _join(name)
                with _netlink() as ns:
                    ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                    eth0 = ns.link_lookup(ifname="eth0")[0]
                    ns.addr("add", index=eth0, address=address, prefixlen=self.subnet.prefixlen)
                    ns.link("set", index=eth0, state="up")
                    ns.route("add", dst="0.0.0.0/0", gateway=str(self.gateway))

            _in_thread(inside)
            for mapping in mappings:
                for table, chain, rule in _dnat_rules(mapping, address, self._tag(euid)):
                    _iptables("-t", table, "-A", chain, *rule)
        except Exception as exc:  # netlink, iptables and mount errors alike
            with contextlib.suppress(Exception):
                self.detach(euid)
            raise Fault(FaultCode.INTERNAL_ERROR, f"cannot set up the network of {euid}: {exc}") from None

    def detach(self, euid: str) -> None:
        """Remove the EU's rules, link and namespace (idempotent)."""
        _delete_tagged(lambda tag: tag == self._tag(euid))
        with _netlink() as ipr:
            found = ipr.link_lookup(ifname=self._veth(euid))
            if found:
                ipr.link("del", index=found[0])
        _remove_namespace(self.namespace(euid))

    def sweep(self, owned: set[str]) -> list[str]:
        """At start: remove the namespaces, links and rules of EUs not in ``owned``; the EUIDs."""
        prefix = f"{self.instance}-"
        names = os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []
        gone = {name[len(prefix) :] for name in names if name.startswith(prefix)} - owned
        tagged = f"dsm:{self.instance}:"
        gone |= {tag[len(tagged) :] for tag in _tags() if tag.startswith(tagged) and tag != tagged + "bridge"} - owned
        for euid in sorted(gone):
            self.detach(euid)
        return sorted(gone)


def _in_thread(work: Callable[[], None]) -> None:
    """Run ``work`` in a thread of its own (it may change that thread's network namespace)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="dsm-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _create_namespace(name: str) -> None:
    """A new network namespace kept by a bind mount at /run/netns/<name> (this thread moves into it)."""
    NETNS_DIR.mkdir(mode=0o755, exist_ok=True)
    path = NETNS_DIR / name
    path.touch(mode=0o444)
    _check(_libc.unshare(CLONE_NEWNET), "unshare")
    source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    _check(_libc.mount(source.encode(), str(path).encode(), None, MS_BIND, None), f"mount {path}")


def _join(name: str) -> None:
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")
    finally:
        os.close(fd)


def _remove_namespace(name: str) -> None:
    path = NETNS_DIR / name
    if path.exists():
        _libc.umount2(str(path).encode(), MNT_DETACH)  # fails harmlessly when a create stopped short of it
        path.unlink()


def _dnat_rules(mapping: tuple[str, int, int], address: str, tag: str) -> list[tuple[str, str, list[str]]]:
    protocol, external, internal = mapping
    target = f"{address}:{internal}"
    match = ["-p", protocol, "--dport", str(external)]
    comment = ["-m", "comment", "--comment", tag]
    return [
        ("nat", "PREROUTING", [*match, "-j", "DNAT", "--to-destination", target, *comment]),
        ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", *match, "-j", "DNAT", "--to-destination", target,
                           *comment]),
        ("filter", "FORWARD", ["-d", address, "-p", protocol, "--dport", str(internal), "-j", "ACCEPT", *comment]),
    ]  # fmt: skip


def _iptables(*args: str) -> str:
    done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _ensure_rule(table: str, chain: str, rule: list[str]) -> None:
    if subprocess.run(["iptables", "-w", "-t", table, "-C", chain, *rule], capture_output=True).returncode != 0:
        _iptables("-t", table, "-A", chain, *rule)


def _rules() -> list[tuple[str, str]]:
    """(table, rule as ``iptables -S`` prints it) of every rule."""
    return [(table, line) for table in ("filter", "nat") for line in _iptables("-t", table, "-S").splitlines()]


def _tag_of(line: str) -> str:
    words = shlex.split(line)
    return words[words.index("--comment") + 1] if "--comment" in words[:-1] else ""


def _tags() -> set[str]:
    return {_tag_of(line) for _, line in _rules()} - {""}


def _delete_tagged(wanted: Callable[[str], bool]) -> None:
    for table, line in _rules():
        if line.startswith("-A ") and wanted(_tag_of(line)):
            _iptables("-t", table, "-D", *shlex.split(line[3:]))
