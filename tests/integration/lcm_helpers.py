"""Helpers shared by the LCM end-to-end and crash-recovery tests (real daemon, real runc).

They drive ``dsm`` only through its control socket (``operate`` with ``wait`` for the
long commands, so the DUStateChange! comes back with the outcome) and look at the
daemon's state directory and its runc root from outside.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_archive, make_bundle

from dsm_tr181.control_client import DaemonError
from tests.support.daemon import DsmDaemon

T = TypeVar("T")

SM = "Device.SoftwareModules."
EE = SM + "ExecEnv."
DU = SM + "DeploymentUnit."
EU = SM + "ExecutionUnit."
INSTALL_DU = SM + "InstallDU()"
EE1 = EE + "1"

needs_runc = pytest.mark.skipif(
    shutil.which("runc") is None or not BUSYBOX.exists(),
    reason="needs runc and a static busybox at /bin/busybox (Debian package busybox-static)",
)


def service(greeting: str) -> tuple[str, ...]:
    """A container that prints ``greeting`` and runs until SIGTERM (then exits 0 at once)."""
    return ("/bin/sh", "-c", f"trap 'exit 0' TERM; echo {greeting}; sleep 3600 & wait")


def build_du(
    work: Path,
    name: str,
    version: str = "1.0.0",
    *,
    args: Sequence[str] | None = None,
    suffix: str = ".tar",
    flat: bool = False,
    vendor: str = "acme",
    description: str = "",
    out: Path | None = None,
) -> Path:
    """A DU archive of a busybox bundle named ``name``; by default a service printing
    ``hello from <name> <version>``. Returns the archive path (``out`` or work/<name>-<version><suffix>)."""
    source = work / "src" / f"{name}-{version}-{suffix.strip('.')}{'-flat' if flat else ''}" / name
    shutil.rmtree(source.parent, ignore_errors=True)
    make_bundle(
        source,
        args=tuple(args) if args is not None else service(f"hello from {name} {version}"),
        version=version,
        vendor=vendor,
        description=description or f"{name} test bundle",
    )
    archive = out or work / f"{name}-{version}{suffix}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    make_archive(source, archive, flat=flat)
    shutil.rmtree(source.parent, ignore_errors=True)
    return archive


@dataclass
class Outcome:
    """The end of a command: its outputs or its fault, and the DUStateChange! args (text values)."""

    result: dict[str, Any] | None
    fault: dict[str, Any] | None
    event: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.fault is None


def operate(dsm: DsmDaemon, command: str, args: Mapping[str, Any] | None = None, timeout: float = 60.0) -> Outcome:
    """Run a command to its end (``wait``); refusals and failures become an Outcome with a fault."""
    text = {k: _text(v) for k, v in (args or {}).items()}
    client = dsm.client(timeout=timeout)
    try:
        result = client.follow("operate", {"command": command, "args": text}, lambda progress: None)
    except DaemonError as error:
        return Outcome(None, error.fault, error.reply.get("DUStateChange"))
    return Outcome(dict(result), None, result.get("DUStateChange"))


def operate_async(dsm: DsmDaemon, command: str, args: Mapping[str, Any] | None = None) -> Any:
    """Start a command without waiting for its end (the daemon may die right after)."""
    return dsm.call("operate", {"command": command, "args": {k: _text(v) for k, v in (args or {}).items()}})


def install(dsm: DsmDaemon, url: str, **args: Any) -> Outcome:
    return operate(dsm, INSTALL_DU, {"URL": url, "ExecutionEnvRef": EE1, "ShutdownDelay": 3, **args})


def set_values(dsm: DsmDaemon, values: Mapping[str, Any]) -> None:
    result = dsm.call("set", {"values": {k: _text(v) for k, v in values.items()}})
    assert not result["errors"], result


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows(dsm: DsmDaemon, table: str) -> list[str]:
    """The row paths ("...DeploymentUnit.3.") of a table."""
    return [r["path"] for r in dsm.call("instances", {"paths": [table], "first_level_only": True})]


def row(dsm: DsmDaemon, path: str) -> dict[str, str]:
    """A row's parameters by name (text values)."""
    base = path if path.endswith(".") else path + "."
    return {k[len(base) :]: v for k, v in dsm.get(base).items() if "." not in k[len(base) :]}


def value(dsm: DsmDaemon, path: str) -> str:
    return dsm.get(path)[path]


def eu_of(dsm: DsmDaemon, du: str) -> str:
    (eu,) = value(dsm, du + "ExecutionUnitList").split(",")
    return eu + "."


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (a state to reach, not a sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_status(dsm: DsmDaemon, eu: str, status: str, timeout: float = 20.0) -> dict[str, str]:
    """Poll the EU row until its Status is ``status``; the row then."""

    def reached() -> dict[str, str] | None:
        current = row(dsm, eu)
        return current if current["Status"] == status else None

    try:
        return eventually(reached, timeout, f"{eu}Status = {status}")
    except AssertionError:
        raise AssertionError(f"{eu} never became {status}: {row(dsm, eu)}\n{dsm.log()[-4000:]}") from None


def runc_state(dsm: DsmDaemon, container: str) -> dict[str, Any] | None:
    """``runc state`` of a container in the daemon's runc root, None when unknown."""
    done = subprocess.run(
        ["runc", "--root", str(dsm.runc_root), "state", container], capture_output=True, text=True, check=False
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def running_rootfs(state: Mapping[str, Any]) -> str:
    """The root filesystem a container (``runc state``) runs: the runtime is given the
    effective spec in a bundle directory of its own, whose root.path is the DU's rootfs."""
    return str(json.loads((Path(state["bundle"]) / "config.json").read_text())["root"]["path"])


def tree_files(directory: Path) -> list[str]:
    """Every path below ``directory``, relative, sorted ([] when it does not exist)."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def top_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def runc_kill(dsm: DsmDaemon, container: str, signal: str = "KILL") -> None:
    """Signal a container behind the daemon's back."""
    subprocess.run(["runc", "--root", str(dsm.runc_root), "kill", container, signal], capture_output=True, check=True)
