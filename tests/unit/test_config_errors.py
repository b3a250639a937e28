"""One configuration error style: every key of integration/dsm.toml (its commented-out ones
too), given a value of the wrong type and, where the key has a range or a form, a value
outside it, is refused with ``section.key: reason`` — whichever validator owns it (config.py,
the LCM and ExecEnv settings, the confinement policy, the packagers', runtimes' and buses'
sections, fleet).

The whole configuration is checked the way the daemon builds it: load_config, then every
configured runtime, the packagers, every [bus.<name>] section and [fleet] through their
factories (an adapter that is merely unavailable here has accepted its section).
"""

from __future__ import annotations

import contextlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181 import adapters, fleet
from dsm_tr181.adapters import AdapterContext
from dsm_tr181.config import ConfigError, load_config
from dsm_tr181.errors import AdapterUnavailable

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "integration" / "dsm.toml"


def _sections() -> dict[str, dict[str, Any]]:
    """Section name (as errors spell it) -> key -> default, commented-out keys included."""
    text = SHIPPED.read_text()
    parsed = tomllib.loads(text)
    found: dict[str, dict[str, Any]] = {}
    current = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[\[?([\w.]+)\]\]?.*", line):
            current = "execenv[0]" if header[1] == "execenv" else header[1]
            found[current] = {}
        elif commented := re.fullmatch(r"# (\w+) = (\"[^\"]*\").*", line):
            found[current][commented[1]] = json.loads(commented[2])
    for name, keys in found.items():
        table = parsed["execenv"][0] if name == "execenv[0]" else parsed
        for part in [] if name == "execenv[0]" else name.split("."):
            table = table[part]
        keys.update(table)
    return found


SECTIONS = _sections()

POSITIVE_TAR = ("max_archive_bytes", "max_unpacked_bytes", "max_entries", "connect_timeout", "read_timeout",
                "rate_window", "max_signature_bytes")  # fmt: skip
POSITIVE_IMAGE = ("max_image_bytes", "max_unpacked_bytes", "max_entries", "connect_timeout", "read_timeout",
                  "max_signature_bytes")  # fmt: skip

# Values of the right type that the key's range or form refuses; (value, other keys of the
# section that make it matter).
OUT_OF_RANGE: dict[str, list[tuple[Any, dict[str, Any]]]] = {
    "daemon.socket_mode": [("rw", {}), (0o10000, {}), (True, {})],
    "daemon.shared_read_seconds": [(-1.0, {}), (61, {})],
    "daemon.buses": [(["carrier-pigeon"], {}), ([], {})],
    "daemon.log_level": [("loud", {})],
    "lcm.default_execenv": [("nowhere", {})],
    "lcm.max_parallel_operations": [(0, {})],
    "lcm.operation_timeout": [(0.0, {})],
    "lcm.shutdown_timeout": [(-1.0, {})],
    "lcm.eu_log_max_bytes": [(0, {})],
    "lcm.eu_log_backups": [(-1, {})],
    "lcm.usage_interval": [(0.0, {})],
    "lcm.disk_usage_interval": [(0.0, {})],
    "lcm.preinstalled": [([7], {})],
    "lcm.instance_name": [("a/b", {})],
    "lcm.uid_range_base": [(0, {})],
    "lcm.uid_range_size": [(0, {})],
    "execenv[0].name": [("no spaces", {})],
    "execenv[0].runtime": [("steam", {})],
    "execenv[0].initial_run_level": [(-1, {})],
    "execenv[0].initial_eu_run_level": [(-2, {})],
    "execenv[0].allowed_host_paths": [(["relative"], {}), (["/"], {})],
    "execenv[0].allowed_devices": [(["/tmp/x"], {})],
    "execenv[0].extra_capabilities": [(["CAP_TELEPORT"], {})],
    "execenv[0].network": [("wifi", {})],
    "execenv[0].bridge": [("b" * 16, {})],
    "execenv[0].subnet": [("10.0.0.0/31", {}), ("nonsense", {})],
    "execenv[0].signers": [([7], {})],
    "execenv[0].dns": [([7], {}), (["ns.example.com"], {}), (["1.1.1.1\nsearch evil"], {})],
    "execenv[0].allocated_disk_kib": [(-2, {})],
    "execenv[0].allocated_memory_kib": [(-2, {})],
    "execenv[0].allocated_cpu_percent": [(-2, {}), (101, {})],
    **{f"packager.tar.{key}": [(0, {})] for key in POSITIVE_TAR},
    "packager.tar.min_rate": [(-1, {})],
    "packager.tar.max_redirects": [(-1, {})],
    "packager.tar.ca_file": [("", {})],
    "packager.tar.download_dir": [("", {})],
    **{f"packager.image.{key}": [(0, {})] for key in POSITIVE_IMAGE},
    "packager.image.max_redirects": [(-1, {})],
    "packager.image.platform": [("amiga", {})],
    "packager.image.plain_http": [([7], {})],
    "packager.image.layer_dir": [("", {})],
    "packager.image.ca_file": [("", {})],
    "runtime.runc.binary": [("", {})],
    "runtime.runc.kill_timeout": [(-1.0, {})],
    "runtime.runc.log_check_interval": [(0.0, {})],
    "runtime.dobby.bus_address": [("nonsense", {})],
    "runtime.dobby.service": [("not a name", {})],
    "runtime.dobby.object_path": [("relative", {})],
    "runtime.dobby.id_prefix": [("a/b", {})],
    "runtime.dobby.call_timeout": [(0.0, {})],
    "runtime.dobby.start_timeout": [(0.0, {})],
    "bus.dbus.bus": [("nonsense", {})],
    "bus.dbus.name": [("x", {})],
    "bus.dbus.object_path": [("relative", {})],
    "bus.dbus.call_timeout": [(0.0, {})],
    "bus.rbus.library": [("", {})],
    "bus.rbus.component": [("", {})],
    "bus.rbus.call_timeout": [(0.0, {})],
    "bus.rbus.skip": [([7], {})],
    "bus.rbus.watchdog_interval": [(-1.0, {})],
    "bus.rbus.flavour": [("tr069", {})],
    "fleet.start_timeout": [(0.0, {})],
    "fleet.url": [("ftp://fleet", {"enable": True, "token_file": "/t"})],
    "fleet.token_file": [("", {})],
    "fleet.ca_file": [("", {})],
    "fleet.labels": [("fleet", {})],
    "fleet.jitter": [(1.0, {})],
    "fleet.interval": [(0.0, {})],
    "fleet.retry_min": [(0.0, {})],
    "fleet.retry_max": [(1.0, {})],
    "fleet.timeout": [(0.0, {})],
}


def _wrong_type(key: str, default: Any) -> Any:
    if key == "socket_mode":  # "0660" or a number: 7 would be the mode 0o7
        return 1.5
    if isinstance(default, bool):
        return "yes"
    if isinstance(default, int):
        return 2.5
    if isinstance(default, float):
        return "soon"
    if isinstance(default, list):
        return 7
    return 7  # a string's


CASES = [
    pytest.param(section, key, value, extra, id=f"{section}.{key}={value!r}")
    for section, keys in SECTIONS.items()
    for key, default in keys.items()
    for value, extra in [(_wrong_type(key, default), {}), *OUT_OF_RANGE.get(f"{section}.{key}", [])]
]


def _check_everything(raw: dict[str, Any], work: Path) -> None:
    """What the daemon checks of a configuration before it serves."""
    path = work / "dsm.json"
    path.write_text(json.dumps(raw))
    config = load_config({"config": str(path)}, env={})
    for name, section in config.runtimes.items():
        with contextlib.suppress(AdapterUnavailable):  # e.g. no crun here: the section was checked
            adapters.create("runtime", name, section, AdapterContext(name, work / "runtimes" / name))
    sections = {"tar": config.packager, "image": config.packager_image}
    adapters.create("packager", "auto", sections, AdapterContext("auto", work / "bundles"))
    for name, section in config.bus_sections.items():
        with contextlib.suppress(AdapterUnavailable):  # no data model given: the section was checked first
            adapters.create("bus", name, section, AdapterContext(name, work / "buses" / name))
    fleet.settings(config.fleet)


def _shipped() -> dict[str, Any]:
    raw = tomllib.loads(SHIPPED.read_text())
    raw["daemon"]["state_dir"] = raw["lcm"]["trust_dir"] = ""  # nothing is created: only checked
    return raw


def test_the_shipped_configuration_passes(tmp_path: Path) -> None:
    _check_everything(_shipped(), tmp_path)


def test_every_key_is_walked() -> None:
    walked = {f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys}
    assert set(OUT_OF_RANGE) <= walked, set(OUT_OF_RANGE) - walked
    assert {"packager.tar.ca_file", "fleet.token_file", "lcm.max_parallel_operations", "bus.rbus.skip"} <= walked
    assert len(walked) > 100


@pytest.mark.parametrize(("section", "key", "value", "extra"), CASES)
def test_a_bad_value_is_refused_as_section_key_reason(
    tmp_path: Path, section: str, key: str, value: Any, extra: dict[str, Any]
) -> None:
    raw = _shipped()
    if section == "execenv[0]":
        table = raw["execenv"][0]
    else:
        table = raw
        for part in section.split("."):
            table = table.setdefault(part, {})
    if section == "runtime.dobby":  # a runtime's section is checked when an ExecEnv uses it
        raw["execenv"][0]["runtime"] = "dobby"
    table.update({**extra, key: value})
    with pytest.raises(ConfigError) as refused:
        _check_everything(raw, tmp_path)
    assert re.match(rf"{re.escape(section)}\.{key}: \S", str(refused.value)), str(refused.value)


def test_a_socket_group_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    """daemon.socket_group is checked when the control socket is made (the group may be
    created after the configuration is written): the same style."""
    import asyncio

    from dsm_tr181.buses.control_socket import ControlServer
    from dsm_tr181.schema.loader import load_documents
    from dsm_tr181.tree.datamodel import DataModel

    model = Path(__file__).resolve().parent / "data" / "test-model.xml"
    server = ControlServer(DataModel(load_documents([model])), tmp_path / "dsm.sock", group="no-such-group-16")
    with pytest.raises(ConfigError, match=r"^daemon\.socket_group: group 'no-such-group-16' does not exist"):
        asyncio.run(server.start())
    assert not (tmp_path / "dsm.sock").exists()
