"""EU networking, a mode per EU (``NetworkConfig.X_RDK_NetworkMode`` / 2.20's
``NetworkConfig.ShareParentNetwork`` inputs, datamodel/vendor/dsm-rdk-network.xml), persisted in
its record and served as its ``NetworkConfig.X_RDK_NetworkMode``:

* ``None`` — a namespace with loopback only;
* ``ShareParent`` — the ExecEnv's network, which is the host's: only where the ExecEnv's
  ``network`` is ``host`` or its policy says ``allow_share_parent_network`` (7002 otherwise);
  PortMapping inputs are then ignored, as 2.20 says;
* ``Bridged`` — a namespace of its own on the ExecEnv's bridge (:class:`~.ports.Network`): only
  in an ExecEnv whose ``network`` is ``bridged`` (7002 otherwise).

An EU installed without a mode gets its ExecEnv's ``network`` setting (none, host, bridged).

A bridged EU gets an address of the ExecEnv's subnet at install (the first one no other EU
of the ExecEnv holds; kept in its record, so stable across restarts), its namespace, link,
route and ``NetworkConfig.PortMapping`` rules when it starts, and loses them when it stops,
exits or is uninstalled; what a crash left is swept at start. Its ``/etc/hosts``,
``/etc/resolv.conf`` and ``/etc/nsswitch.conf`` are files beside its effective spec
(``<bundle>/.dsm-spec/<euid>.etc/``), bind-mounted read-only, replaced on Update and removed
with the bundle. ``NetworkConfig.AccessInterfaceRefList`` and ``PortMappingRefList`` stay
empty: they are strong references to ``Device.IP.Interface`` / ``Device.NAT.PortMapping``
rows, which this product does not serve (see :mod:`.euinputs` for AccessInterfaces).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import Network
from dsm_tr181.lcm.records import ExecutionUnitRecord

if TYPE_CHECKING:
    from dsm_tr181.lcm.manager import Lcm

log = logging.getLogger(__name__)

BRIDGED, NONE, SHARE_PARENT = "Bridged", "None", "ShareParent"
MODES = (BRIDGED, NONE, SHARE_PARENT)
EE_MODES = {"bridged": BRIDGED, "none": NONE, "host": SHARE_PARENT}  # ExecEnv ``network`` -> EU mode
NSSWITCH = "hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n"


class Networking:
    def __init__(self, lcm: Lcm, networks: Mapping[str, Network]) -> None:
        self.lcm = lcm
        self.networks = dict(networks)  # ExecEnv name -> its bridged network

    def mode(self, eu: ExecutionUnitRecord) -> str:
        """The EU's mode: its own, else its ExecEnv's ``network`` setting."""
        if eu.network_mode:
            return eu.network_mode
        settings = self.lcm.execenvs.settings.get(eu.ee)
        return EE_MODES[settings.network] if settings is not None else NONE

    def check(self, eu: ExecutionUnitRecord) -> None:
        """Fix the EU's mode; 7002 for a mode its ExecEnv does not allow, port mappings without
        a bridge, or ports another EU maps."""
        eu.network_mode = mode = self.mode(eu)
        refusal = self.mode_refusal(eu.ee, mode)
        if refusal is not None:
            raise refusal
        if not eu.port_mappings or mode == SHARE_PARENT:  # 2.20: PortMapping ignored when sharing
            return
        if mode != BRIDGED:
            raise Fault(FaultCode.REQUEST_DENIED, f"EU network mode {mode}: no bridged network for port mappings")
        taken = {
            (str(m["Protocol"]), int(m["ExternalPort"]))
            for unit in self.lcm.executions.units.values()
            if unit.record.instance != eu.instance and self.mode(unit.record) == BRIDGED
            for m in unit.record.port_mappings
        }
        for mapping in eu.port_mappings:
            key = (str(mapping["Protocol"]), int(mapping["ExternalPort"]))
            if key in taken:
                raise Fault(FaultCode.REQUEST_DENIED, f"{key[0].upper()} port {key[1]} is already mapped to another EU")

    def mode_refusal(self, ee: str, mode: str) -> Fault | None:
        """Why ExecEnv ``ee`` gives none of its EUs ``mode`` (None if it may; "" = its default)."""
        settings = self.lcm.execenvs.settings.get(ee)
        network = settings.network if settings is not None else "none"
        allowed = network == "host" or (settings is not None and settings.confinement.allow_share_parent_network)
        if mode == SHARE_PARENT and not allowed:
            return Fault(
                FaultCode.REQUEST_DENIED,
                f"execution environment {ee!r} does not allow units to share its network (ShareParentNetwork)",
            )
        if mode == BRIDGED and (network != "bridged" or ee not in self.networks):
            return Fault(FaultCode.REQUEST_DENIED, f"execution environment {ee!r} has no bridged network")
        return None

    def allocate(self, eu: ExecutionUnitRecord) -> None:
        """A bridged EU's address: the subnet's first one (after the bridge's) nobody holds;
        an EU of another mode holds none."""
        if self.mode(eu) != BRIDGED:
            eu.address = ""
            return
        if eu.address:
            return
        subnet = ipaddress.ip_network(self.lcm.execenvs.settings[eu.ee].subnet)
        taken = {
            u.record.address
            for u in self.lcm.executions.units.values()
            if u.record.ee == eu.ee and u.record.instance != eu.instance
        }
        for host in list(subnet.hosts())[1:]:
            if str(host) not in taken:
                eu.address = str(host)
                return
        raise Fault(
            FaultCode.SYSTEM_RESOURCES_EXCEEDED, f"no free address in {subnet} for execution environment {eu.ee!r}"
        )

    def context(self, eu: ExecutionUnitRecord, bundle: Path) -> tuple[str, tuple[tuple[str, str], ...]]:
        """A Bridged EU's namespace path and /etc files (written here); ("", ()) for the others."""
        if self.mode(eu) != BRIDGED or eu.ee not in self.networks:
            return "", ()
        directory = bundle / ".dsm-spec" / f"{eu.container_id}.etc"
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        files = {
            "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{eu.address}\t{eu.container_id}\n",
            "resolv.conf": "".join(f"nameserver {server}\n" for server in self._nameservers(eu.ee)),
            "nsswitch.conf": NSSWITCH,
        }
        for name, text in files.items():
            (directory / name).write_text(text)
            (directory / name).chmod(0o644)
        etc = tuple((str(directory / name), f"/etc/{name}") for name in files)
        return str(self.networks[eu.ee].namespace_path(eu.container_id)), etc

    def _nameservers(self, ee: str) -> tuple[str, ...]:
        configured = self.lcm.execenvs.settings[ee].dns
        if configured:
            return configured
        try:
            lines = Path("/etc/resolv.conf").read_text().splitlines()
        except OSError:
            return ()
        return tuple(line.split()[1] for line in lines if line.startswith("nameserver ") and len(line.split()) > 1)

    async def attach(self, eu: ExecutionUnitRecord) -> None:
        network = self.networks.get(eu.ee)
        if network is None or self.mode(eu) != BRIDGED:
            return
        mappings = tuple(
            (str(m["Protocol"]).lower(), int(m["ExternalPort"]), int(m["InternalPort"])) for m in eu.port_mappings
        )
        await asyncio.to_thread(network.attach, eu.container_id, eu.address, mappings)

    async def detach(self, eu: ExecutionUnitRecord) -> None:
        """Never raises: what cannot be removed now is logged and swept at the next start."""
        network = self.networks.get(eu.ee)
        if network is not None:
            try:
                await asyncio.to_thread(network.detach, eu.container_id)
            except Exception as exc:  # netlink, iptables and mount errors alike
                log.error("EU %s: cannot remove its network: %s", eu.euid, exc)

    async def sweep(self) -> None:
        """At start, after adoption: only running EUs keep their network."""
        for ee, network in self.networks.items():
            owned = {u.record.container_id for u in self.lcm.executions.of_ee(ee) if u.running}
            try:
                for euid in await asyncio.to_thread(network.sweep, owned):
                    log.warning("removed the network left by EU %s", euid)
            except Exception as exc:  # the daemon serves anyway; starts set the network up afresh
                log.error("execution environment %s: cannot sweep its network: %s", ee, exc)
