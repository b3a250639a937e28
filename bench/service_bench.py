"""EUs as managed services: the cost of limits, the log writer and monitoring, each as a
ratio to a baseline measured in the same run.

1. Start with limits: ``OciRuntime.start()`` of an effective spec with Resources limits
   (the ExecEnv's parent cgroup written, the log writer spawned) against a bare
   ``runc run -d`` of a bundle whose config.json carries the same limits. Median of N
   interleaved rounds; target <= 1.2 x.
2. Monitoring: with 50 containers running, one sweep of the daemon's per-EU usage read
   (``OciRuntime.usage()``: memory, CPU and processes) against reading each container's
   cgroup files directly, their directories known beforehand (memory.usage_in_bytes,
   memory.stat, cpuacct.usage, cgroup.procs). Prints the per-EU cost; target <= 2 x.
3. The log writer's private memory (one per running container).

4. Bridged networking, in a network (and mount) namespace of its own (``unshare``): an EU
   start with its network (``BridgedNetwork.attach`` + ``OciRuntime.start()`` joining the
   namespace) against the same made with the ``ip`` command + ``runc run -d``; target
   <= 1.2 x. Then the network setup and teardown of 50 EUs, per EU, checking nothing is left.
5. Idle cost: a real daemon with 50 DUs installed and their EUs Active, nobody reading;
   the daemon's CPU time (utime + stime of /proc/<pid>/stat) over a window (65 s by default:
   one DiskSpaceInUse sweep included), as a share of one core; target < 0.5 %.

Each figure is printed with its target and "met" or "NOT met"; the exit status is 1 when
any target is missed.

Run as root: python bench/service_bench.py [-n 10] [--containers 50] [--idle-window 65] [--only idle]
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

from dsm_tools.sample_bundle import make_bundle

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec
from dsm_tr181.containerspec.resources import Limits, execenv_resources
from dsm_tr181.lcm.ports import StartSpec
from dsm_tr181.runtimes.cgroups import _container_dirs
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig

START_TARGET, MONITOR_TARGET, IDLE_TARGET = 1.2, 2.0, 0.5
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


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def read_directly(dirs: dict[str, Path]) -> tuple[int, int, int]:
    """What a monitor reading the cgroup files itself does for one container (it knows where they are)."""
    memory = int((dirs["memory"] / "memory.usage_in_bytes").read_text())
    (dirs["memory"] / "memory.stat").read_text()
    cpu = int((dirs["cpuacct"] / "cpuacct.usage").read_text())
    procs = len((dirs["pids"] / "cgroup.procs").read_text().split())
    return memory, cpu, procs


def private_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone meanwhile
        return -1
    for line in text.splitlines():
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
                  f" -> ratio {ratio:.2f} (target <= {START_TARGET}: {verdict(ratio <= START_TARGET)})")  # fmt: skip

            ids = [f"mon-{n}" for n in range(containers)]
            for container_id in ids:
                await runtime_start(runtime, work, bundle, container_id, keep=True)
            pids = [(await runtime.status(container_id)).pid for container_id in ids]
            cgroups = [_container_dirs(pid) for pid in pids]
            direct_times, daemon_times = [], []
            for _ in range(3):
                began = time.perf_counter()
                for dirs in cgroups:
                    read_directly(dirs)
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
                  f"(target <= {MONITOR_TARGET}: {verdict(daemon / direct <= MONITOR_TARGET)})")  # fmt: skip
            shims = subprocess.run(["pgrep", "-f", f"logshim.py {work}/"], capture_output=True, text=True)
            sizes = [private_kib(int(pid)) for pid in shims.stdout.split()]
            sizes = [size for size in sizes if size > 0]
            if sizes:
                print(
                    f"3. log writer: {len(sizes)} running, median private memory "
                    f"{statistics.median(sizes):.0f} KiB each"
                )
        finally:
            for container_id in await runtime.list_ids():  # also after a failure: none is left running
                await runtime.remove(container_id)
            await runtime.close()
            for controller in ("memory", "cpu", "cpuacct", "pids", "devices", "freezer", "blkio", "cpuset", "unified"):
                for directory in sorted(Path(f"/sys/fs/cgroup/{controller}/{INSTANCE}").glob("**/"), reverse=True):
                    directory.rmdir()
    return 1 if failed else 0


BRIDGE, SUBNET = "dsmbench0", "10.77.0.0/24"


def ip_network_and_run(runc: str, work: Path, bundle: Path, container_id: str, address: str) -> float:
    """The baseline: the namespace, veth, address and route with ``ip``, then ``runc run -d``."""
    name, veth = f"base-{container_id}", f"vb{container_id[-10:]}"
    target = work / "bare-bundles" / container_id
    target.mkdir(parents=True, exist_ok=True)
    config = effective(bundle, container_id)
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{name}"})
    (target / "config.json").write_text(json.dumps(config))
    root, pid_file = work / "bare-root", work / f"{container_id}.pid"
    began = time.perf_counter()
    for command in (
        ["ip", "netns", "add", name],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "link", "set", veth, "master", BRIDGE, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "route", "add", "default", "via", "10.77.0.1"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    with open(work / f"{container_id}.log", "ab") as log:  # the container keeps it: not a pipe to wait on
        subprocess.run([runc, "--root", str(root), "run", "-d", "--bundle", str(target), "--pid-file", str(pid_file),
                        container_id], check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                       start_new_session=True)  # fmt: skip
    elapsed = time.perf_counter() - began
    subprocess.run([runc, "--root", str(root), "delete", "--force", container_id], check=True)
    os.waitpid(int(pid_file.read_text()), 0)
    subprocess.run(["ip", "netns", "del", name], check=True)
    return elapsed


def setup_and_teardown(network: Any, count: int) -> tuple[float, float]:
    began = time.perf_counter()
    for index in range(count):
        network.attach(f"s{index}", f"10.77.0.{2 + index}", (("tcp", 20000 + index, 80),))
    setup = time.perf_counter() - began
    began = time.perf_counter()
    for index in range(count):
        network.detach(f"s{index}")
    return setup, time.perf_counter() - began


async def network_part(rounds: int, count: int) -> int:
    """Run inside ``unshare --net --mount``: nothing here reaches the host's network."""
    from dsm_tr181.network.bridged import NETNS_DIR, BridgedNetwork, _tags

    NETNS_DIR.mkdir(parents=True, exist_ok=True)  # what `ip netns add` would make
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(NETNS_DIR)], check=True)
    runc = shutil.which("runc") or "runc"
    network = BridgedNetwork("bench", BRIDGE, SUBNET)
    await asyncio.to_thread(network.ensure_bridge)  # pyroute2's sync API runs a loop of its own: not in ours
    failed = False
    with tempfile.TemporaryDirectory(prefix="service-bench-net-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle")
        runtime = OciRuntime(OciRuntimeConfig(binary=runc), work / "state")
        try:
            base, ours = [], []
            for round_ in range(rounds + 1):
                b = await asyncio.to_thread(
                    ip_network_and_run, runc, work, bundle, f"b{round_}", f"10.77.0.{200 + round_}"
                )
                container_id = f"n{round_}"
                config = effective(bundle, container_id)
                config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
                config["linux"]["namespaces"].append(
                    {"type": "network", "path": str(network.namespace_path(container_id))}
                )
                began = time.perf_counter()
                await asyncio.to_thread(network.attach, container_id, f"10.77.0.{10 + round_}", ())
                await runtime.start(StartSpec(container_id, config, work / "logs" / f"{container_id}.log"))
                o = time.perf_counter() - began
                await runtime.remove(container_id)
                await asyncio.to_thread(network.detach, container_id)
                if round_:
                    base.append(b)
                    ours.append(o)
            ratio = statistics.median(ours) / statistics.median(base)
            failed |= ratio > START_TARGET
            print(f"4. bridged EU start ({rounds} rounds, medians): ip + runc run -d "
                  f"{statistics.median(base) * 1000:.1f} ms, attach + OciRuntime.start() "
                  f"{statistics.median(ours) * 1000:.1f} ms -> ratio {ratio:.2f} "
                  f"(target <= {START_TARGET}: {verdict(ratio <= START_TARGET)})")  # fmt: skip
            setup, teardown = await asyncio.to_thread(setup_and_teardown, network, count)
            left = [n for n in os.listdir(NETNS_DIR)] + [t for t in _tags() if not t.endswith(":bridge")]
            failed |= bool(left)
            print(f"   network setup of {count} EUs (with a port mapping each) {setup * 1000:.0f} ms "
                  f"({setup / count * 1000:.1f} ms/EU), teardown {teardown * 1000:.0f} ms "
                  f"({teardown / count * 1000:.1f} ms/EU); left behind: {left or 'nothing'} "
                  f"(target: nothing: {verdict(not left)})")  # fmt: skip
        finally:
            await runtime.close()
    return 1 if failed else 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle_part(count: int, window: float) -> int:
    """A real daemon with ``count`` running EUs left alone: its CPU share over ``window`` s."""
    from dsm_tools.sample_bundle import make_archive

    from tests.support.daemon import DsmDaemon

    with tempfile.TemporaryDirectory(prefix="service-bench-idle-") as tmp:
        work = Path(tmp)
        (work / "dsm").mkdir()
        daemon = DsmDaemon(work / "dsm", lcm={"usage_interval": 2.0}).start()  # the product's default
        try:
            events = daemon.events("Device.SoftwareModules.")
            for index in range(count):
                archive = make_archive(make_bundle(work / f"svc{index}"), work / f"svc{index}.tar")
                daemon.call("du.install", {"ee_name": "default", "uri": str(archive)})
                events.du_state_change("Install")
            eus = [path.removesuffix("EUID") for path in daemon.get("Device.SoftwareModules.ExecutionUnit.")
                   if path.endswith(".EUID")]  # fmt: skip
            for eu in eus:
                daemon.call("operate", {"command": f"{eu}SetRequestedState()", "args": {"RequestedState": "Active"}})
            waiting = {f"{eu}Status" for eu in eus}

            def last_active(event: Any) -> bool:
                if event.get("value") == "Active":
                    waiting.discard(event.get("path"))
                return not waiting

            events.wait_for(last_active, 300)
            table = daemon.get("Device.SoftwareModules.ExecutionUnit.")
            active = sum(value == "Active" for path, value in table.items() if path.endswith(".Status"))
            assert daemon.process is not None
            time.sleep(3.0)  # let the starts' after-effects settle
            pid, hz = daemon.process.pid, os.sysconf("SC_CLK_TCK")
            ticks, began = cpu_ticks(pid), time.monotonic()
            time.sleep(window)
            share = (cpu_ticks(pid) - ticks) / hz / (time.monotonic() - began) * 100
            print(f"5. idle daemon with {active} running EUs: {share:.2f} % of a core over {window:.0f} s "
                  f"(target < {IDLE_TARGET} %: {verdict(share < IDLE_TARGET and active == count)})")  # fmt: skip
            return 0 if share < IDLE_TARGET and active == count else 1
        finally:
            daemon.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=10)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--idle-window", type=float, default=65.0, help="seconds watched (one disk sample)")
    parser.add_argument("--only", choices=("runtime", "network", "idle"), help="run one part")
    parser.add_argument("--network-part", action="store_true", help=argparse.SUPPRESS)  # run by main() in unshare
    args = parser.parse_args()
    if args.network_part:
        raise SystemExit(asyncio.run(network_part(args.rounds, args.containers)))
    codes = []
    if args.only in (None, "runtime"):
        codes.append(asyncio.run(main(args.rounds, args.containers)))
    if args.only in (None, "network"):
        isolated = ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, __file__]
        part = [*isolated, "--network-part", "-n", str(args.rounds), "--containers", str(args.containers)]
        codes.append(subprocess.run(part, check=False).returncode)
    if args.only in (None, "idle"):
        codes.append(idle_part(args.containers, args.idle_window))
    raise SystemExit(max(codes))
