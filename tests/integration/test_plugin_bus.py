"""A bus from another distribution: tests/plugins/dsm-lines-bus, installed into the test
environment by bootstrap.sh, registers ``lines`` in the ``dsm_tr181.buses`` entry point group.
The real daemon, configured with ``buses = ["lines"]`` and a ``[bus.lines]`` section, serves
its data model on it: nothing in this repository's package names it."""

from __future__ import annotations

import socket
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dsm_tr181 import adapters
from dsm_tr181.config import ConfigError, load_config
from tests.support.daemon import DsmDaemon, write_config

PLUGIN = "dsm-lines-bus"
SM = "Device.SoftwareModules."


def _plugin_installed() -> bool:
    return any(entry.name == "lines" for entry in entry_points(group="dsm_tr181.buses"))


needs_plugin = pytest.mark.skipif(
    not _plugin_installed(), reason=f"{PLUGIN} is not installed (bootstrap.sh: pip install -e tests/plugins/{PLUGIN})"
)


def _config(tmp_path: Path, buses: list[str]) -> Path:
    return write_config(tmp_path / "dsm.toml", {"daemon": {"state_dir": str(tmp_path), "buses": buses}}, [])


@pytest.mark.unit
@needs_plugin
def test_the_config_takes_any_registered_bus_and_names_the_known_ones(tmp_path: Path) -> None:
    entry = next(e for e in entry_points(group="dsm_tr181.buses") if e.name == "lines")
    assert entry.dist is not None and entry.dist.name == PLUGIN
    assert load_config({"config": str(_config(tmp_path, ["lines", "dbus"]))}, env={}).buses == ("lines", "dbus")
    with pytest.raises(ConfigError, match=r"^daemon\.buses: 'nope' is not one of auto, none, .*lines"):
        load_config({"config": str(_config(tmp_path, ["nope"]))}, env={})
    with pytest.raises(ValueError, match=r"^bus\.lines\.path: must be a path"):
        adapters.create("bus", "lines", {"path": 7}, adapters.AdapterContext("lines", tmp_path))


def _ask(path: Path, line: str) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            assert chunk, f"the bus closed the connection; so far {answer!r}"
            answer += chunk
    return answer.decode().splitlines()[:-1]


@pytest.mark.integration
@needs_plugin
def test_the_daemon_serves_its_model_on_the_plugin_bus(tmp_path: Path) -> None:
    served = tmp_path / "lines.sock"
    dsm = DsmDaemon(tmp_path, buses=["lines"], extra={"bus.lines": {"path": str(served)}}).start()
    try:
        assert _ask(served, SM + "ExecEnvNumberOfEntries") == [SM + "ExecEnvNumberOfEntries=1"]
        assert _ask(served, SM + "ExecEnv.1.Name") == [SM + "ExecEnv.1.Name=default"]
        (fault,) = _ask(served, SM + "Nope")
        assert fault.startswith("!7026 ")
    finally:
        dsm.stop()
    assert not served.exists()  # closed at shutdown like every bus
