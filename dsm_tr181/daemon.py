"""``dsm``: the Deployment and State Manager daemon.

Builds the data model, the store, the adapters chosen by configuration (packager,
runtimes, buses) and the LCM, serves the control socket for dsmcli, tells systemd it is
ready (``sd_notify READY=1``), and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm_tr181 import __version__, adapters, fleet
from dsm_tr181.adapters import AdapterContext
from dsm_tr181.buses.control_socket import ControlServer
from dsm_tr181.buses.memory import LateTrim, one_heap, release_free_memory, trim_after_operations
from dsm_tr181.buses.provider import BusProvider
from dsm_tr181.config import ConfigError, DaemonConfig, SectionError, load_config, overrides_from_args
from dsm_tr181.errors import AdapterUnavailable
from dsm_tr181.lcm.manager import Lcm
from dsm_tr181.lcm.ports import Runtime
from dsm_tr181.network.bridged import BridgedNetwork
from dsm_tr181.runtimes.deferred import DeferredRuntime
from dsm_tr181.schema import load_schema
from dsm_tr181.secretbox import FernetSealer
from dsm_tr181.signing import truststore
from dsm_tr181.store import SqliteStore
from dsm_tr181.switch_interval import hand_over_promptly
from dsm_tr181.tree.datamodel import DataModel
from dsm_tr181.volumes.loopfs import LoopVolumes

log = logging.getLogger("dsm")


def take_notify_socket() -> str | None:
    """systemd's notification socket for sd_notify(), removed from the environment (as
    sd_notify(3)'s unset_environment does): the runtimes' children (runc) inherit the
    environment, and a runc that sees NOTIFY_SOCKET treats it as its own and fails to
    start containers."""
    return os.environ.pop("NOTIFY_SOCKET", None)


def sd_notify(address: str | None, state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd. Best effort:
    a notification socket that went away must not stop the daemon."""
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify(%r) failed: %s", state.split("\n")[0], exc)


def settle_memory() -> None:
    """After start-up: keep the long-lived objects (schema, tree) out of the garbage
    collector's full passes, which otherwise stall the loop for tens of ms on a large
    tree, and give the heap freed by start-up (the store's JSON) back to the system."""
    gc.collect()
    gc.freeze()
    release_free_memory()


def build_runtimes(config: DaemonConfig) -> dict[str, Runtime]:
    """One runtime instance per ExecEnv, working in ``<state_dir>/execenvs/<name>/``: two
    ExecEnvs on the same runtime keep their containers apart. A runtime that cannot be
    created now (AdapterUnavailable) is a placeholder: its ExecEnv is Error until it can."""
    runtimes: dict[str, Runtime] = {}
    for ee in config.lcm.execenvs:
        adapters.load("runtime", ee.runtime)  # an unknown name or a broken plug-in stops the daemon now
        context = AdapterContext(ee.runtime, config.state_dir / "execenvs" / ee.name)
        create = functools.partial(adapters.create, "runtime", ee.runtime, config.runtimes[ee.runtime], context)
        try:
            runtimes[ee.name] = create()
        except ConfigError:
            raise
        except ValueError as exc:  # a plug-in that checks its section without dsm_tr181.sections
            raise SectionError(f"runtime.{ee.runtime}", "", str(exc)) from None
        except AdapterUnavailable as exc:
            log.error("runtime %s is unavailable: %s (execution environment %s)", ee.runtime, exc, ee.name)
            runtimes[ee.name] = DeferredRuntime(ee.runtime, create, str(exc))
    return runtimes


async def start_buses(config: DaemonConfig, dm: DataModel) -> list[BusProvider]:
    """The configured bus front ends. A bus named explicitly must start; "auto" takes rbus
    when it answers, else D-Bus, else runs with the control socket only (with a warning)."""
    loop = asyncio.get_running_loop()
    started: list[BusProvider] = []
    for choice in config.buses:
        if choice == "none":
            continue
        candidates = ("rbus", "dbus") if choice == "auto" else (choice,)
        for name in candidates:
            try:
                context = AdapterContext(name, config.state_dir / "buses" / name, dm, loop)
                provider = adapters.create("bus", name, config.bus_sections.get(name, {}), context)
                await provider.start()
            except Exception as exc:  # in auto mode any bus failure but a bad section means "try the next one"
                if choice != "auto" or isinstance(exc, ConfigError):
                    raise
                log.info("bus %s unavailable (%s)", name, exc)
                continue
            log.info("serving the data model on %s", name)
            started.append(provider)
            break
        else:
            log.warning("no bus available (tried %s): serving the control socket only", ", ".join(candidates))
    return started


async def serve(config: DaemonConfig, notify_address: str | None = None) -> None:
    state_dir = config.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    datamodel = Path(config.datamodel_dir) if config.datamodel_dir else None
    fleet_settings = fleet.settings(config.fleet)
    extensions = fleet.extensions(datamodel) if fleet_settings.enable else []
    dm = DataModel(load_schema(datamodel, cache_dir=state_dir, extensions=extensions))
    try:
        # Images to the image packager, DU archives to the tar packager (dsm_tr181/packagers/dispatch.py).
        sections = {"tar": config.packager, "image": config.packager_image}
        packager = adapters.create("packager", "auto", sections, AdapterContext("auto", config.lcm.bundle_dir))
        sealer = FernetSealer(state_dir / "secret.key")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    certificates = truststore.load(config.lcm.trust_dir)
    runtimes = build_runtimes(config)
    volumes = LoopVolumes(state_dir / "volumes")
    networks = {
        ee.name: BridgedNetwork(config.lcm.instance_name, ee.bridge_name, ee.subnet)
        for ee in config.lcm.execenvs
        if ee.network == "bridged"
    }
    lcm = Lcm(
        dm, SqliteStore(state_dir / "dsm.db"), packager, runtimes, config.lcm, sealer, certificates, volumes, networks
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await lcm.start()
    agent = fleet.start(fleet_settings, dm, state_dir)
    # SIGHUP (systemctl reload dsm): read the trust store again
    loop.add_signal_handler(signal.SIGHUP, lambda: lcm.certificates.reload(truststore.load(config.lcm.trust_dir)))
    settle_memory()
    operations_trim = LateTrim(delay=1.0)
    operations_ended = trim_after_operations(dm, operations_trim)
    control = ControlServer(
        dm,
        config.socket,
        config.socket_mode,
        config.socket_group or None,
        eu_confinement=lcm.eu_confinement,
        eu_log=lcm.eu_log,
        eu_processes=lcm.eu_processes,
        shared_read_seconds=config.shared_read_seconds,
    )
    await control.start()
    buses = await start_buses(config, dm)
    log.info("dsm %s ready: control socket %s", __version__, config.socket)
    sd_notify(notify_address, f"READY=1\nSTATUS=serving {len(lcm.deployments.records)} deployment units")
    await stop.wait()
    log.info("stopping")
    sd_notify(notify_address, "STOPPING=1")
    await lcm.drain()  # while the buses still serve: the operations' last events reach their clients
    for provider in reversed(buses):
        await provider.close()
    await control.close()
    operations_ended.cancel()
    operations_trim.cancel()
    if agent is not None:
        await agent.close()
    await lcm.close()


def main(argv: Sequence[str] | None = None) -> int:
    one_heap()  # before any thread: see buses/memory.py
    hand_over_promptly()  # the loop waits less for the GIL: see switch_interval.py
    overrides: dict[str, Any] = overrides_from_args(argv)
    notify_address = take_notify_socket()
    try:
        config = load_config(overrides)
    except ConfigError as exc:
        print(f"dsm: {exc}", file=sys.stderr)
        return 2
    journal = "JOURNAL_STREAM" in os.environ  # journald adds its own timestamps
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config, notify_address))
    except (ConfigError, AdapterUnavailable) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
