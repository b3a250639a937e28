"""Time to a running container: the daemon's SetRequestedState and OciRuntime.start()
against a bare ``runc run -d``.

Each of N rounds (default 20) starts the same busybox bundle once per measured path,
timed until the container runs; the container is then removed or stopped (not timed).
Paths run interleaved so that machine noise hits them alike. Prints each path's median
and its ratio to the baseline, a bare ``runc run -d`` spawned with subprocess.run.
Targets: at most 1.2 x the baseline (issues 8 and 12), each printed with "met" or "NOT met".

* ``OciRuntime.start()``: the runtime adapter alone (bundle, log writer, ``run --detach``, pidfd).
* ``dsm SetRequestedState``: a real daemon with the bundle installed as a DU; from the
  Operate ``ExecutionUnit.1.SetRequestedState(Active)`` on the control socket until the
  EU's Status is Active (a ValueChange on the event stream).

To add a path, write an ``async def f(ctx: Bench, container_id: str) -> float`` that
returns the seconds to "running" and cleans up after itself, and append it to MEASURES.

Run as root: python bench/start_bench.py [-n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.lcm.ports import StartSpec
from dsm_tr181.runtimes.oci import OciRuntime, OciRuntimeConfig
from tests.support.daemon import DsmDaemon, EventStream
from tests.support.specs import spec_of

TARGET_RATIO = 1.2
EU = "Device.SoftwareModules.ExecutionUnit.1."


@dataclass
class Bench:
    work: Path
    bundle: Path
    runtime: OciRuntime
    runc: str
    daemon: DsmDaemon
    events: EventStream

    def log_path(self, container_id: str) -> Path:
        return self.work / "logs" / f"{container_id}.log"


Measure = Callable[[Bench, str], Awaitable[float]]


async def bare_runc_run(bench: Bench, container_id: str) -> float:
    root, pid_file = bench.work / "bare-root", bench.work / f"{container_id}.pid"
    log_path = bench.log_path(container_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    began = time.perf_counter()
    try:
        subprocess.run(
            [bench.runc, "--root", str(root), "run", "-d", "--bundle", str(bench.bundle), "--pid-file", str(pid_file),
             container_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True, start_new_session=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
    finally:
        os.close(log)
    subprocess.run([bench.runc, "--root", str(root), "delete", "--force", container_id], check=True)
    os.waitpid(int(pid_file.read_text()), 0)  # the bench is a subreaper: the init was ours
    return elapsed


async def oci_runtime_start(bench: Bench, container_id: str) -> float:
    began = time.perf_counter()
    await bench.runtime.start(
        StartSpec(container_id, spec_of(bench.bundle, container_id), bench.log_path(container_id))
    )
    elapsed = time.perf_counter() - began
    await bench.runtime.remove(container_id)
    return elapsed


async def dsm_set_requested_state(bench: Bench, container_id: str) -> float:
    async def request(state: str) -> None:
        args = {"command": f"{EU}SetRequestedState()", "args": {"RequestedState": state}}
        await asyncio.to_thread(bench.daemon.call, "operate", args)
        await asyncio.to_thread(
            bench.events.wait_for, lambda e: e.get("path") == f"{EU}Status" and e.get("value") == state
        )

    began = time.perf_counter()
    await request("Active")
    elapsed = time.perf_counter() - began
    await request("Idle")
    return elapsed


BASELINE: tuple[str, Measure] = ("bare `runc run -d`", bare_runc_run)
MEASURES: list[tuple[str, Measure]] = [
    ("OciRuntime.start()", oci_runtime_start),
    ("dsm SetRequestedState", dsm_set_requested_state),
]


async def main(rounds: int) -> int:
    runc = shutil.which("runc")
    if runc is None or os.geteuid() != 0:
        print("needs root and runc", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="start-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle")
        runtime = OciRuntime(OciRuntimeConfig(binary=runc), work / "state")
        (work / "dsm").mkdir()
        daemon = DsmDaemon(work / "dsm", lcm={"usage_interval": 60.0}).start()
        events = daemon.events("Device.SoftwareModules.")
        daemon.call("du.install", {"ee_name": "default", "uri": str(make_archive(bundle, work / "bundle.tar"))})
        events.du_state_change("Install")
        bench = Bench(work, bundle, runtime, runc, daemon, events)
        paths = [BASELINE, *MEASURES]
        timings: dict[str, list[float]] = {name: [] for name, _ in paths}
        try:
            for round_ in range(rounds + 1):  # round 0 warms the caches and is not counted
                for index, (name, measure) in enumerate(paths):
                    elapsed = await measure(bench, f"bench-{round_}-{index}")
                    if round_:
                        timings[name].append(elapsed)
        finally:
            await runtime.close()
            daemon.cleanup()
    baseline = statistics.median(timings[BASELINE[0]])
    print(f"{rounds} rounds, median time until the container runs:")
    print(f"  {BASELINE[0]:<28} {baseline * 1000:7.1f} ms")
    worst = 0.0
    for name, _ in MEASURES:
        median = statistics.median(timings[name])
        worst = max(worst, median / baseline)
        met = "met" if median / baseline <= TARGET_RATIO else "NOT met"
        print(f"  {name:<28} {median * 1000:7.1f} ms   ratio {median / baseline:.2f} (target <= {TARGET_RATIO}: {met})")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=20)
    raise SystemExit(asyncio.run(main(parser.parse_args().rounds)))
