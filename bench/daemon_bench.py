"""Daemon restart time and idle memory with many persisted DUs.

Writes a store holding N DeploymentUnits (each with its ExecutionUnit and a small bundle
directory on disk) through the product's own SqliteStore and records, then starts the
real ``dsm`` daemon on it and measures:
  * restart time: process start until the daemon reports READY=1 (sd_notify),
  * idle RSS after start (VmRSS) and the high-water mark (VmHWM),
against the same measures for the same daemon with an empty store (the baseline, same run).
Targets at N=1000: restart < 1 s, idle RSS < 40 MB.

Run as root (the daemon sets up the runc runtime): python bench/daemon_bench.py [N]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tr181.lcm.identity import annex_c_uuid, duid, euid
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecEnvRecord, ExecutionUnitRecord
from dsm_tr181.lcm.tables import DU_TABLE, EE_TABLE, EU_TABLE, LOG_TABLE, stamp
from dsm_tr181.store import SqliteStore
from tests.support.daemon import DsmDaemon

RUNS = 3


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


def measure(count: int) -> tuple[float, int, int]:
    """Median start time (s), idle RSS and high-water mark (KiB) over RUNS restarts."""
    work = Path(tempfile.mkdtemp(prefix="dsm-bench-"))
    try:
        daemon = DsmDaemon(work, lcm={"usage_interval": 60.0})
        daemon.state.mkdir(parents=True)
        populate(daemon.state, count)
        times, rss, hwm = [], [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            daemon.start()
            times.append(time.perf_counter() - started)
            assert daemon.process is not None
            time.sleep(1.0)  # idle
            memory = memory_kib(daemon.process.pid)
            rss.append(memory["VmRSS"])
            hwm.append(memory["VmHWM"])
            daemon.stop()
        return statistics.median(times), int(statistics.median(rss)), int(statistics.median(hwm))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    base_time, base_rss, base_hwm = measure(0)
    time_n, rss_n, hwm_n = measure(count)
    print(f"{'persisted DUs':>14} {'start s':>8} {'idle RSS MiB':>13} {'peak MiB':>9}")
    print(f"{0:>14} {base_time:>8.3f} {base_rss / 1024:>13.1f} {base_hwm / 1024:>9.1f}")
    print(f"{count:>14} {time_n:>8.3f} {rss_n / 1024:>13.1f} {hwm_n / 1024:>9.1f}")
    print(f"ratio to the empty daemon: start {time_n / base_time:.2f}x, idle RSS {rss_n / base_rss:.2f}x")
    print(f"targets: start < 1 s ({'met' if time_n < 1 else 'MISSED'}), "
          f"idle RSS < 40 MiB ({'met' if rss_n < 40 * 1024 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
