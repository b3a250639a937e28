"""EUs as managed services: the cost of limits, the log writer and monitoring, each as a
ratio to a baseline measured in the same run.

1. Start with limits: ``OciRuntime.start()`` of an effective spec with Resources limits
   (the ExecEnv's parent cgroup written, the log writer spawned) against a bare
   ``runc run -d`` of a bundle whose config.json carries the same limits. Median of N
   interleaved rounds; target <= 1.2 x.
2. Monitoring: with 50 containers running, one sweep of the daemon's per-EU usage read
   (``OciRuntime.usage()``: memory, CPU and processes) against reading each container's
   cgroup files directly (memory.usage_in_bytes, memory.stat, cpuacct.usage, cgroup.procs).
   Prints the per-EU cost; target <= 2 x.
3. The log writer's private memory (one per running container).

Networking (bridged EU start vs ``ip netns`` + ``runc run -d``; setup/teardown of 50 EUs)
is not benchmarked: per-EU networking is not implemented yet.

Run as root: python bench/service_bench.py [-n 10] [--containers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec
from dsm_tr181.containerspec.resources import Limits, execenv_resources
from dsm_tr181.lcm.ports import StartSpec
from dsm_tr181.runtimes.cgroups import _container_dirs
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig
from dsm_tr181.sample_bundle import make_bundle

START_TARGET, MONITOR_TARGET = 1.2, 2.0
INSTANCE = f"dsm-bench-{os.getpid()}"
EE_LIMITS = Limits(memory_kib=1 << 20, cpu_percent=100)
EU_LIMITS = Limits(memory_kib=32768, cpu_percent=50)
CPUS = os.cpu_count() or 1


def effective(bundle: Path, container_id: str) -> dict[str, Any]:
    config = json.loads((bundle / "config.json").read_text())
    context = SpecContext("bench", container_id, f"/{INSTANCE}/bench/{container_id}", platform.machine(),
                          execenv_limits=EE_LIMITS, cpus=CPUS)  # fmt: skip
    return effective_spec(config, str(bundle), EuInputs(resources=EU_LIMITS), ConfinementPolicy(), context)


def bare_bundle(work: Path, bundle: Path, container_id: str) -> Path:
    """A bundle for bare runc: the same spec (limits included), rootfs by absolute path."""
    target = work / "bare-bundles" / container_id
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(effective(bundle, container_id)))
    return target


def bare_run(runc: str, work: Path, bundle: Path, container_id: str) -> float:
    root, pid_file = work / "bare-root", work / f"{container_id}.pid"
    target = bare_bundle(work, bundle, container_id)
    log = os.open(work / f"{container_id}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    began = time.perf_counter()
    try:
        subprocess.run([runc, "--root", str(root), "run", "-d", "--bundle", str(target), "--pid-file", str(pid_file),
                        container_id], stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
                       start_new_session=True)  # fmt: skip
        elapsed = time.perf_counter() - began
    finally:
        os.close(log)
    subprocess.run([runc, "--root", str(root), "delete", "--force", container_id], check=True)
    os.waitpid(int(pid_file.read_text()), 0)
    return elapsed


async def runtime_start(runtime: OciRuntime, work: Path, bundle: Path, container_id: str, keep: bool = False) -> float:
    spec = StartSpec(container_id, effective(bundle, container_id), work / "logs" / f"{container_id}.log",
                     execenv_resources=execenv_resources(EE_LIMITS, CPUS))  # fmt: skip
    began = time.perf_counter()
    await runtime.start(spec)
    elapsed = time.perf_counter() - began
    if not keep:
        await runtime.remove(container_id)
    return elapsed


def read_directly(pid: int) -> tuple[int, int, int]:
    """What a monitor reading the cgroup files itself does for one container."""
    dirs = _container_dirs(pid)
    memory = int((dirs["memory"] / "memory.usage_in_bytes").read_text())
    (dirs["memory"] / "memory.stat").read_text()
    cpu = int((dirs["cpuacct"] / "cpuacct.usage").read_text())
    procs = len((dirs["pids"] / "cgroup.procs").read_text().split())
    return memory, cpu, procs


def private_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return -1


async def main(rounds: int, containers: int) -> int:
    runc = shutil.which("runc")
    if runc is None or os.geteuid() != 0:
        print("needs root and runc", file=sys.stderr)
        return 2
    failed = False
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle")
        runtime = OciRuntime(OciRuntimeConfig(binary=runc), work / "state")
        try:
            bare, ours = [], []
            for round_ in range(rounds + 1):  # round 0 warms up
                b = await asyncio.to_thread(bare_run, runc, work, bundle, f"bare-{round_}")
                o = await runtime_start(runtime, work, bundle, f"ours-{round_}")
                if round_:
                    bare.append(b)
                    ours.append(o)
            ratio = statistics.median(ours) / statistics.median(bare)
            failed |= ratio > START_TARGET
            print(f"1. start with limits ({rounds} rounds, medians): bare runc run -d "
                  f"{statistics.median(bare) * 1000:.1f} ms, OciRuntime.start() {statistics.median(ours) * 1000:.1f} ms"
                  f" -> ratio {ratio:.2f} (target <= {START_TARGET})")  # fmt: skip

            ids = [f"mon-{n}" for n in range(containers)]
            for container_id in ids:
                await runtime_start(runtime, work, bundle, container_id, keep=True)
            pids = [(await runtime.status(container_id)).pid for container_id in ids]
            direct_times, daemon_times = [], []
            for _ in range(3):
                began = time.perf_counter()
                for pid in pids:
                    read_directly(pid)
                direct_times.append(time.perf_counter() - began)
                began = time.perf_counter()
                for container_id in ids:
                    await runtime.usage(container_id)
                daemon_times.append(time.perf_counter() - began)
            direct, daemon = min(direct_times), min(daemon_times)
            failed |= daemon / direct > MONITOR_TARGET
            print(f"2. monitoring {containers} running EUs (best of 3 sweeps): cgroup files directly "
                  f"{direct * 1000:.1f} ms ({direct / containers * 1e6:.0f} us/EU), OciRuntime.usage() "
                  f"{daemon * 1000:.1f} ms ({daemon / containers * 1e6:.0f} us/EU) -> ratio {daemon / direct:.1f} "
                  f"(target <= {MONITOR_TARGET})")  # fmt: skip
            shims = subprocess.run(["pgrep", "-f", "runtimes/logshim.py"], capture_output=True, text=True)
            sizes = [private_kib(int(pid)) for pid in shims.stdout.split()]
            sizes = [size for size in sizes if size > 0]
            if sizes:
                print(
                    f"3. log writer: {len(sizes)} running, median private memory "
                    f"{statistics.median(sizes):.0f} KiB each"
                )
            for container_id in ids:
                await runtime.remove(container_id)
        finally:
            await runtime.close()
            for controller in ("memory", "cpu", "cpuacct", "pids", "devices", "freezer", "blkio", "cpuset"):
                for directory in sorted(Path(f"/sys/fs/cgroup/{controller}/{INSTANCE}").glob("**/"), reverse=True):
                    directory.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=10)
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.rounds, args.containers)))
