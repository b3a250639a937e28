"""Daemon restart time and memory with many persisted DUs, with each bus on.

Writes a store holding N DeploymentUnits (each with its ExecutionUnit and a small bundle
directory on disk) through the product's own SqliteStore and records, then starts the
real ``dsm`` daemon on it, once per bus configuration (``none``: the control socket only;
``dbus``: also served on a private dbus-daemon; ``rbus`` where librbus and rtrouted are
installed), and measures:
  * restart time: process start until the daemon reports READY=1 (sd_notify),
  * idle RSS after start (VmRSS) and the high-water mark (VmHWM),
  * after one whole-tree read (``Device.SoftwareModules.`` through the bus's front end:
    D-Bus Get with ``gdbus``, else the control socket's get): the peak (VmHWM) and the
    RSS once settled,
against the same daemon with an empty store (the baseline, same run).
Targets at N=1000: restart < 1 s, idle RSS < 40 MiB with the bus on, peak after a
whole-tree read < 50 MiB and back to idle (within 10 %) after it.

Run as root (the daemon sets up the runc runtime): python bench/daemon_bench.py [N]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.as_installed import compiled
from dsm_tr181.lcm.identity import annex_c_uuid, duid, euid
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecEnvRecord, ExecutionUnitRecord
from dsm_tr181.lcm.tables import DU_TABLE, EE_TABLE, EU_TABLE, LOG_TABLE, stamp
from dsm_tr181.store import SqliteStore
from tests.support.daemon import DsmDaemon
from tests.support.dbusdaemon import private_bus

RUNS = 3
SM = "Device.SoftwareModules."


def populate(state: Path, count: int) -> None:
    store = SqliteStore(state / "dsm.db")
    records: list = [ExecEnvRecord(name="default", instance=1)]
    for n in range(1, count + 1):
        bundle = state / "bundles" / str(n) / "g1"
        (bundle / "rootfs").mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": ["/bin/true"]},
                                                        "root": {"path": "rootfs"}}))  # fmt: skip
        name = f"app{n}"
        records.append(DeploymentUnitRecord(
            instance=n, uuid=annex_c_uuid(name, "example.com"), ee="default", status="Installed",
            url=f"http://repo.example.com/{name}.tar", duid=duid("default", n), name=name, vendor="example.com",
            version="1.0.0", bundle=str(bundle), installed=stamp(), last_update=stamp(), eus=[n], disk_kib=4,
        ))  # fmt: skip
        records.append(ExecutionUnitRecord(
            instance=n, du=n, euid=euid("default", n), container_id=euid("default", n), ee="default", name=name,
            vendor="example.com", version="1.0.0", creation_time=stamp(),
            log_file=str(state / "logs" / f"{euid('default', n)}.log"), log_row=n,
        ))  # fmt: skip
    counters = {EE_TABLE: 2, DU_TABLE: count + 1, EU_TABLE: count + 1, LOG_TABLE: count + 1}
    store.commit(put=records, counters=counters)
    store.close()


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@dataclass
class Figures:
    start_s: float
    idle_kib: int
    peak_kib: int  # VmHWM after start
    read_peak_kib: int  # VmHWM after the whole-tree read
    settled_kib: int  # VmRSS a while after it


def whole_tree_read(daemon: DsmDaemon, bus: str, address: str) -> None:
    if bus == "dbus":
        command = ["gdbus", "call", "--address", address, "--dest", "com.rdkcentral.DSM", "--object-path",
                   "/com/rdkcentral/DSM", "--method", "com.rdkcentral.DSM.Get", f"['{SM}']"]  # fmt: skip
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True, timeout=300)
    else:
        daemon.client(timeout=300).call("get", {"paths": [SM], "objects": True})


def measure(count: int, bus: str) -> Figures:
    """Medians over RUNS restarts."""
    work = Path(tempfile.mkdtemp(prefix="dsm-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            extra: dict[str, dict[str, str]] = {}
            address = ""
            if bus == "dbus":
                address = stack.enter_context(private_bus()).address
                extra["bus.dbus"] = {"bus": address}
            daemon = DsmDaemon(work, lcm={"usage_interval": 60.0}, extra=extra, buses=[bus])
            daemon.state.mkdir(parents=True)
            populate(daemon.state, count)
            runs: list[Figures] = []
            for _ in range(RUNS):
                started = time.perf_counter()
                daemon.start()
                elapsed = time.perf_counter() - started
                assert daemon.process is not None
                time.sleep(1.0)  # idle
                idle = memory_kib(daemon.process.pid)
                whole_tree_read(daemon, bus, address)
                after = memory_kib(daemon.process.pid)
                time.sleep(2.0)
                settled = memory_kib(daemon.process.pid)
                runs.append(Figures(elapsed, idle["VmRSS"], idle["VmHWM"], after["VmHWM"], settled["VmRSS"]))
                daemon.stop()
            return Figures(
                *(statistics.median(getattr(r, name) for r in runs) for name in Figures.__dataclass_fields__)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def buses() -> list[str]:
    found = ["none"]
    if shutil.which("dbus-daemon") and shutil.which("gdbus"):
        found.append("dbus")
    if shutil.which("rtrouted"):
        found.append("rbus")
    else:
        print("rbus: not measured (no rtrouted/librbus on this machine)")
    return found


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    compiled()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    mib = 1024
    print(f"{'bus':>5} {'DUs':>5} {'start s':>8} {'idle MiB':>9} {'peak MiB':>9} {'read peak':>10} {'settled':>8}")
    met = []
    for bus in buses():
        base = measure(0, bus)
        full = measure(count, bus)
        for n, f in ((0, base), (count, full)):
            print(f"{bus:>5} {n:>5} {f.start_s:>8.3f} {f.idle_kib / mib:>9.1f} {f.peak_kib / mib:>9.1f} "
                  f"{f.read_peak_kib / mib:>10.1f} {f.settled_kib / mib:>8.1f}")  # fmt: skip
        checks = {
            "start < 1 s": full.start_s < 1,
            "idle RSS < 40 MiB": full.idle_kib < 40 * mib,
            "peak after a whole-tree read < 50 MiB": full.read_peak_kib < 50 * mib,
            "back to idle after it (within 10 %)": full.settled_kib <= 1.1 * full.idle_kib,
        }
        met += checks.values()
        print(f"  {bus}, N={count}: ratio to the empty daemon: start {full.start_s / base.start_s:.2f}x, "
              f"idle RSS {full.idle_kib / base.idle_kib:.2f}x; "
              + "; ".join(f"{name}: {verdict(ok)}" for name, ok in checks.items()))  # fmt: skip
    raise SystemExit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
