"""Daemon configuration: defaults → file → environment → command line.

The file is TOML or JSON (by content); its path comes from ``--config``, else
``DSM_CONFIG_FILE`` (as in the original DSM), else ``/etc/dsm/dsm.toml`` if present. With
no file at all the daemon runs with the defaults: one ExecEnv ``default`` on runc.

TOML layout::

    [daemon]      state_dir, socket, socket_mode, socket_group, shared_read_seconds, buses, log_level,
                  datamodel_dir
    [lcm]         bundle_dir, log_dir, default_execenv, allow_downgrade, max_parallel_operations,
                  operation_timeout, update_settle_time, shutdown_timeout, eu_log_max_bytes, eu_log_backups,
                  usage_interval, disk_usage_interval,
                  stop_containers_on_exit, preinstalled, instance_name, uid_range_base, uid_range_size,
                  trust_dir
    [[execenv]]   name, runtime, enable, vendor, version, type, initial_run_level,
                  initial_eu_run_level, allocated_disk_kib, allocated_memory_kib, allocated_cpu_percent,
                  signers, require_signature, network, bridge, subnet, dns, and its confinement policy:
                  allow_privileged, allowed_host_paths, allowed_devices, extra_capabilities,
                  allowed_rdk_plugins, user_namespace, allow_share_parent_network
    [packager.tar], [packager.image], [runtime.<name>], [bus.rbus], [bus.dbus]   each adapter's own section
    [fleet]       the fleet client (dsm_tr181/fleet/settings.py), off by default

The original DSM's ``dsm.config`` JSON (``ExecutionEnvironments``, ``Packagers``,
``CommandServer``) is accepted too and translated.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dsm_tr181 import adapters
from dsm_tr181.containerspec import ConfinementPolicy
from dsm_tr181.lcm.settings import ExecEnvSettings, LcmSettings
from dsm_tr181.sections import ConfigError, SectionError, build_section, check_known, check_value, construct

__all__ = ["ConfigError", "DaemonConfig", "SectionError", "load_config"]

DEFAULT_FILE = Path("/etc/dsm/dsm.toml")
BUS_KEYWORDS = ("auto", "none")  # besides the names of the dsm_tr181.buses entry points
LOG_LEVELS = ("debug", "info", "warning", "error")
SECTIONS = ("daemon", "lcm", "execenv", "packager", "runtime", "bus", "fleet")


@dataclass(frozen=True)
class DaemonConfig:
    lcm: LcmSettings
    state_dir: Path = Path("/var/lib/dsm")
    socket: Path = Path("/run/dsm/dsm.sock")
    socket_mode: int = 0o660
    socket_group: str = ""
    shared_read_seconds: float = 0.5  # a large get's answer given to the same get meanwhile (buses/shared_reads.py)
    buses: tuple[str, ...] = ("auto",)  # auto: rbus when it answers, else D-Bus
    log_level: str = "info"
    datamodel_dir: str = ""  # "" = the installed datamodel/
    packager: Mapping[str, Any] = field(default_factory=dict)
    packager_image: Mapping[str, Any] = field(default_factory=dict)
    runtimes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # runtime name -> section
    bus_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fleet: Mapping[str, Any] = field(default_factory=dict)  # the [fleet] section, read by dsm_tr181.fleet


def load_config(argv_overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Build the configuration. ``argv_overrides``: command-line values (``config``,
    ``state_dir``, ``socket``, ``buses``, ``log_level``), ``None`` entries ignored."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (argv_overrides or {}).items() if v is not None}
    path = cli.pop("config", None) or env.get("DSM_CONFIG_FILE") or (DEFAULT_FILE if DEFAULT_FILE.exists() else None)
    raw = read_file(Path(path)) if path else {}
    _check_layout(raw)
    daemon = dict(raw.get("daemon", {}))
    for key, name in (("state_dir", "DSM_STATE_DIR"), ("socket", "DSM_SOCKET"), ("log_level", "DSM_LOG_LEVEL")):
        if env.get(name):
            daemon[key] = env[name]
    if env.get("DSM_BUSES"):
        daemon["buses"] = env["DSM_BUSES"].split(",")
    daemon.update(cli)
    buses = raw.get("bus", {})
    if env.get("DSM_RBUS_LIBRARY"):
        buses = {**buses, "rbus": {**buses.get("rbus", {}), "library": env["DSM_RBUS_LIBRARY"]}}
    return _build(daemon, raw, buses)


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a table/object")
    return translate_original(data) if "ExecutionEnvironments" in data else data


def translate_original(data: Mapping[str, Any]) -> dict[str, Any]:
    """The original DSM's dsm.config (JSON) in this product's layout."""
    out: dict[str, Any] = {"daemon": {}, "lcm": {}, "execenv": []}
    for ee in data.get("ExecutionEnvironments", []):
        entry = {"name": str(ee.get("name", "default")), "enable": bool(ee.get("enabled", True))}
        if "InitialRunLevel" in ee:
            entry["initial_run_level"] = int(ee["InitialRunLevel"])
        out["execenv"].append(entry)
        if ee.get("default"):
            out["lcm"]["default_execenv"] = entry["name"]
    for packager in data.get("Packagers", {}).values():
        if isinstance(packager, dict) and packager.get("destination"):
            out["lcm"]["bundle_dir"] = packager["destination"]
    socket = data.get("CommandServer", {}).get("domain-socket")
    if socket:
        out["daemon"]["socket"] = socket
    return out


def _check_layout(raw: Mapping[str, Any]) -> None:
    """Known sections only, each of the right shape (a misspelt section is not ignored)."""
    _no_unknown("configuration", raw, set(SECTIONS))
    for name in ("daemon", "lcm", "fleet"):
        if not isinstance(raw.get(name, {}), Mapping):
            raise SectionError(name, "", f"must be a table, not {raw[name]!r}")
    execenvs = raw.get("execenv", [])
    if not isinstance(execenvs, list) or not all(isinstance(ee, Mapping) for ee in execenvs):
        raise SectionError("execenv", "", f"must be an array of tables ([[execenv]]), not {execenvs!r}")
    for name in ("packager", "runtime", "bus"):
        section = raw.get(name, {})
        if not isinstance(section, Mapping):
            raise SectionError(name, "", f"must be a table of tables ([{name}.<name>]), not {section!r}")
        for key, sub in section.items():
            if not isinstance(sub, Mapping):
                raise SectionError(name, key, f"must be a table, not {sub!r}")


def _daemon_text(daemon: Mapping[str, Any], key: str, default: str) -> str:
    value = daemon.get(key, default)
    if not isinstance(value, str | Path):
        raise SectionError("daemon", key, f"must be a string, not {value!r}")
    return str(value)


def _shared_read_seconds(value: Any) -> float:
    seconds: float = check_value("daemon", "shared_read_seconds", float, value)
    if not 0 <= seconds <= 60:
        raise SectionError("daemon", "shared_read_seconds", f"must be between 0 and 60 seconds, not {value!r}")
    return seconds


def _socket_mode(value: Any) -> int:
    """An octal text ("0660") or a number (0o660 in TOML)."""
    mode = -1
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value.strip(), 8)
        except ValueError:
            mode = -1
    if not 0 <= mode <= 0o7777:
        raise SectionError("daemon", "socket_mode", f'must be an octal file mode such as "0660", not {value!r}')
    return mode


def _buses(value: Any) -> tuple[str, ...]:
    """Bus names: ``auto``, ``none`` or any adapter of the ``dsm_tr181.buses`` entry point
    group (this package's rbus and dbus, or another distribution's)."""
    chosen = (value,) if isinstance(value, str) else value
    if not isinstance(chosen, list | tuple) or not chosen or not all(isinstance(bus, str) for bus in chosen):
        raise SectionError("daemon", "buses", f"must be a bus name or a list of them, not {value!r}")
    known = (*BUS_KEYWORDS, *adapters.names("bus"))
    for bus in chosen:
        if bus not in known:
            raise SectionError("daemon", "buses", f"{bus!r} is not one of {', '.join(known)}")
    return tuple(chosen)


def _build(daemon: Mapping[str, Any], raw: Mapping[str, Any], buses: Mapping[str, Any]) -> DaemonConfig:
    known = {f.name for f in fields(DaemonConfig)} - {
        "lcm",
        "packager",
        "packager_image",
        "runtimes",
        "bus_sections",
        "fleet",
    }
    _no_unknown("daemon", daemon, known)
    state_dir = Path(_daemon_text(daemon, "state_dir", str(DaemonConfig.state_dir)))
    chosen = _buses(daemon.get("buses", ("auto",)))
    log_level = _daemon_text(daemon, "log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise SectionError("daemon", "log_level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    lcm_raw = dict(raw.get("lcm", {}))
    execenvs = tuple(_execenv(i, section) for i, section in enumerate(raw.get("execenv", [{}])))
    for index, ee in enumerate(execenvs):
        if ee.name in [other.name for other in execenvs[:index]]:
            raise SectionError(f"execenv[{index}]", "name", f"{ee.name!r} names an earlier execution environment too")
    runtimes = {ee.runtime: _runtime_section(ee.runtime, raw.get("runtime", {})) for ee in execenvs}
    return DaemonConfig(
        state_dir=state_dir,
        socket=Path(_daemon_text(daemon, "socket", str(DaemonConfig.socket))),
        socket_mode=_socket_mode(daemon.get("socket_mode", 0o660)),
        socket_group=_daemon_text(daemon, "socket_group", ""),
        shared_read_seconds=_shared_read_seconds(daemon.get("shared_read_seconds", DaemonConfig.shared_read_seconds)),
        buses=chosen,
        log_level=log_level,
        datamodel_dir=_daemon_text(daemon, "datamodel_dir", ""),
        lcm=_lcm(lcm_raw, state_dir, execenvs),
        packager=raw.get("packager", {}).get("tar", {}),
        packager_image=raw.get("packager", {}).get("image", {}),
        runtimes=runtimes,
        bus_sections=dict(buses),
        fleet=dict(raw.get("fleet", {})),
    )


def _lcm(section: Mapping[str, Any], state_dir: Path, execenvs: tuple[ExecEnvSettings, ...]) -> LcmSettings:
    known = {f.name for f in fields(LcmSettings)} - {"execenvs"}
    _no_unknown("lcm", section, known)
    values = dict(section)
    for key in ("bundle_dir", "log_dir", "trust_dir"):
        if not isinstance(values.get(key, ""), str):
            raise SectionError("lcm", key, f"must be a string, not {values[key]!r}")
    values["bundle_dir"] = Path(values.get("bundle_dir") or state_dir / "bundles")
    values["log_dir"] = Path(values.get("log_dir") or state_dir / "logs")
    values["trust_dir"] = Path(values.get("trust_dir") or state_dir / "signers")
    preinstalled = values.get("preinstalled", [])
    if not isinstance(preinstalled, list | tuple) or not all(isinstance(url, str) for url in preinstalled):
        raise SectionError("lcm", "preinstalled", f"must be a list of URLs, not {preinstalled!r}")
    values["preinstalled"] = tuple(preinstalled)
    if not values.get("instance_name"):
        values["instance_name"] = default_instance_name(state_dir)
    _check_types("lcm", values, LcmSettings)
    return construct(LcmSettings, "lcm", {**values, "execenvs": execenvs})


def default_instance_name(state_dir: Path) -> str:
    """``dsm-<8 hex>`` from the state directory: two daemons on one host never share a cgroup."""
    return "dsm-" + hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:8]


def _execenv(index: int, section: Mapping[str, Any]) -> ExecEnvSettings:
    where = f"execenv[{index}]"
    policy_keys = {f.name for f in fields(ConfinementPolicy)}
    plain = {k: v for k, v in section.items() if k not in policy_keys}
    _no_unknown(where, plain, {f.name for f in fields(ExecEnvSettings)} - {"confinement"} | policy_keys)
    _check_types(where, plain, ExecEnvSettings)
    signers = plain.get("signers", [])
    if not isinstance(signers, list | tuple) or not all(isinstance(name, str) for name in signers):
        raise SectionError(where, "signers", f"must be a list of trust-store names, not {signers!r}")
    dns = plain.get("dns", [])
    if not isinstance(dns, list | tuple) or not all(isinstance(server, str) for server in dns):
        raise SectionError(where, "dns", f"must be a list of nameserver addresses, not {dns!r}")
    runtimes = adapters.names("runtime")
    if plain.get("runtime", "runc") not in runtimes:
        raise SectionError(where, "runtime", f"{plain['runtime']!r} is not one of {', '.join(runtimes)}")
    policy = build_section(ConfinementPolicy, {k: v for k, v in section.items() if k in policy_keys}, where)
    return construct(
        ExecEnvSettings, where, {**plain, "signers": tuple(signers), "dns": tuple(dns), "confinement": policy}
    )


def _runtime_section(name: str, sections: Mapping[str, Any]) -> dict[str, Any]:
    section = dict(sections.get(name, {}))
    if name in ("runc", "crun"):
        section.setdefault("binary", name)
    return section


def _no_unknown(where: str, section: Mapping[str, Any], known: set[str]) -> None:
    check_known(where, section, sorted(known))


def _check_types(where: str, section: Mapping[str, Any], cls: type) -> None:
    """Scalars must have their field's type (a bool is not a number, 2.5 is not an integer),
    checked as every adapter section is (dsm_tr181/sections.py)."""
    hints = typing.get_type_hints(cls)
    for key, value in section.items():
        if hints.get(key) in (bool, int, float, str):
            check_value(where, key, hints[key], value)


def overrides_from_args(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line options of ``dsm`` as load_config overrides."""
    import argparse

    parser = argparse.ArgumentParser(prog="dsm", description="Deployment and State Manager (TR-181 SoftwareModules)")
    parser.add_argument("--config", help="configuration file (TOML or JSON); default: $DSM_CONFIG_FILE")
    parser.add_argument("--state-dir", dest="state_dir", help="where the store, bundles and logs live")
    parser.add_argument("--socket", help="control socket path for dsmcli")
    parser.add_argument(
        "--bus", dest="buses", action="append", help="bus front end: auto, none or a bus adapter's name (repeatable)"
    )
    parser.add_argument("--log-level", dest="log_level", choices=LOG_LEVELS)
    return vars(parser.parse_args(args))
