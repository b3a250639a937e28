"""Gets through rbus against the same DataModel calls in-process.

The real Device.SoftwareModules. tree (``build`` from tree_bench: N DUs, 3N EUs) is
served by RbusProvider on an asyncio loop in a background thread, as the daemon serves
it, with its own rtrouted. A consumer in a separate process (the cffi binding's
``rbus_get`` / ``rbus_getExt``) times:

  * 1000 gets of a parameter outside any row (consecutive gets reuse the provider's
    10 ms row snapshot),
  * 1000 gets alternating between two EU rows (every get is a round trip to the loop),
  * partial-path gets of ``Device.SoftwareModules.`` at several tree sizes,

and the same calls are timed in-process (``DataModel.get_values`` / ``get`` on the
loop). Prints p50/p99 in ms and the rbus/in-process ratio of the medians. Each
series is followed by its floor: the same elements, rows and values served by a bare
rbus_ffi provider answering from a dict on rbus's thread, without loop or tree.

librbus 2.6.0 expands a partial get inside the provider and appends every leaf to a
linked list by walking it, so that get grows with the square of the leaf count; its
consumer gives up after 120 s. The partial gets are therefore measured at small N
(``--partial-sizes``); the 1000-DU tree has ~159 000 leaves.

Run: DSM_RBUS_LIBRARY=.../librbus.so.0 DSM_RTROUTED=.../rtrouted python bench/rbus_bench.py
Skips with a message when they do not name existing files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tree_bench import SM, build
from dsm_tr181.buses import rbus_ffi
from dsm_tr181.buses.rbus import RbusProvider
from dsm_tr181.buses.rbus_values import carried_type, to_rbus
from dsm_tr181.switch_interval import hand_over_promptly
from dsm_tr181.tree.datamodel import DataModel
from tests.support.loopthread import LoopThread
from tests.support.rtrouted import RbusTools, find_tools, running_broker

T = TypeVar("T")
GETS = 1000
LONE = SM + "ExecutionUnitNumberOfEntries"


def rows(n: int) -> tuple[str, str]:
    """Two parameters of EU rows in the middle of the 3N-row table."""
    return SM + f"ExecutionUnit.{3 * n // 2}.Status", SM + f"ExecutionUnit.{3 * n // 2 + 1}.Status"


# ---- the consumer process ----


def consume(library: str, names: Sequence[str], partial: str, partial_runs: int) -> dict[str, Any]:
    """Time ``GETS`` gets cycling over ``names`` (if any), then ``partial_runs`` partial
    gets of ``partial`` (seconds)."""
    with rbus_ffi.Handle(rbus_ffi.load(library), "dsm-bench-consumer") as handle:
        gets = []
        for i in range(GETS if names else 0):
            started = time.perf_counter()
            handle.get(names[i % len(names)])
            gets.append(time.perf_counter() - started)
        partials, leaves = [], 0
        for _ in range(partial_runs):
            started = time.perf_counter()
            leaves = len(handle.get_ext([partial]))
            partials.append(time.perf_counter() - started)
    return {"gets": gets, "partial": partials, "leaves": leaves}


def run_consumer(tools: RbusTools, names: Sequence[str], partial_runs: int, partial: str = SM) -> dict[str, Any]:
    command = [sys.executable, __file__, "consume", str(tools.library), partial, str(partial_runs), *names]
    done = subprocess.run(command, env=tools.env(), capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.splitlines()[-1])


# ---- the provider side ----


class Served:
    """A DataModel of N DUs served on rbus from a loop thread."""

    def __init__(self, tools: RbusTools, n: int) -> None:
        hand_over_promptly()  # served in this process, as in the daemon
        self.dm = build(n)
        self.loop = LoopThread()
        self.provider = RbusProvider.create(self.dm, {"library": str(tools.library)}, self.loop.loop)
        started = time.perf_counter()
        self.loop.wait(self.provider.start(), 600)
        self.start_s = time.perf_counter() - started

    def on_loop(self, function: Callable[[], T]) -> T:
        return self.loop.call(function, timeout=600)

    def close(self) -> None:
        self.loop.wait(self.provider.close(), 60)
        self.loop.stop()


def in_process(dm: DataModel, call: Callable[[int], object], count: int) -> list[float]:
    """Seconds per call, timed on the loop thread (the tree's owner)."""
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def pct(samples: list[float], q: int) -> float:
    """The ``q``th percentile in ms."""
    return 1000 * (statistics.quantiles(samples, n=100)[q - 1] if len(samples) > 1 else samples[0])


def row(label: str, rbus: list[float], local: list[float]) -> None:
    ratio = statistics.median(rbus) / statistics.median(local)
    print(
        f"{label:<44} {pct(rbus, 50):>9.3f} {pct(rbus, 99):>9.3f} "
        f"{pct(local, 50):>9.4f} {pct(local, 99):>9.4f} {ratio:>8.0f}x"
    )


def header() -> None:
    print(f"{'':<44} {'rbus p50':>9} {'rbus p99':>9} {'local p50':>9} {'local p99':>9} {'ratio':>9}  (ms)")


def bench_gets(tools: RbusTools, n: int) -> None:
    served = Served(tools, n)
    dm = served.dm
    series = (("get, parameter outside rows (snapshot reuse)", [LONE]), ("get, alternating rows", rows(n)))
    try:
        print(f"N={n}: {n} DUs, {3 * n} EUs; provider start (elements + rows) {served.start_s:.2f} s")
        header()
        for label, names in series:
            remote = run_consumer(tools, names, 0)["gets"]

            def locally(names: Sequence[str] = names) -> list[float]:
                return in_process(dm, lambda i: dm.get_values([names[i % len(names)]]), GETS)

            row(label, remote, served.on_loop(locally))
    finally:
        served.close()
    for label, names in series:
        samples = bench_floor(tools, dm, names, 0)["gets"]
        floor = f"  floor: {label.split(' (')[0]}"
        print(f"{floor:<44} {pct(samples, 50):>9.3f} {pct(samples, 99):>9.3f}")


def bench_partial(tools: RbusTools, n: int, runs: int) -> None:
    served = Served(tools, n)
    try:
        started = time.perf_counter()
        try:
            result = run_consumer(tools, [], runs)
        except subprocess.CalledProcessError as exc:
            # librbus's consumer gives up after 120 s; what matters is that the provider lives on
            waited = time.perf_counter() - started
            print(f"partial get {SM} N={n}: the consumer gave up after {waited:.0f} s ({exc.stderr.strip()[-120:]})")
            # librbus goes on expanding the abandoned request on the provider's one callback
            # thread; the provider must come back to answering, not crash.
            deadline = time.perf_counter() + 900
            while time.perf_counter() < deadline:
                try:
                    run_consumer(tools, [SM + "DeploymentUnitNumberOfEntries"], 0)
                except subprocess.CalledProcessError:
                    continue
                print(f"  the provider answers again {time.perf_counter() - started:.0f} s after the request; no crash")
                return
            raise RuntimeError("the provider did not answer again within 15 minutes") from None
        dm = served.dm
        local = served.on_loop(lambda: in_process(dm, lambda i: dm.get([SM]), runs))
        row(f"partial get {SM} N={n} ({result['leaves']} leaves)", result["partial"], local)
    finally:
        served.close()
    samples = bench_floor(tools, served.dm, [], runs)["partial"]
    print(f"{'  floor: the same from a bare provider':<44} {pct(samples, 50):>9.3f} {pct(samples, 99):>9.3f}")


def bench_floor(tools: RbusTools, dm: DataModel, names: Sequence[str], runs: int) -> dict[str, Any]:
    """The consumer's timings against a provider answering from a dict of the tree's values."""
    values: dict[str, Any] = {}
    for result in dm.get([SM]):
        for obj in result.resolved:
            for name, value in obj.params.items():
                values[obj.path + name] = to_rbus(obj.schema.parameters[name].type, value)
    elements: list[rbus_ffi.Element] = []
    for obj in dm.schema.objects.values():
        if obj.multi_instance:
            elements.append(rbus_ffi.Table(obj.path))
        for name, parameter in obj.parameters.items():
            elements.append(rbus_ffi.Property(obj.path + name, carried_type(parameter.type), values.__getitem__))
    with rbus_ffi.Handle(rbus_ffi.load(str(tools.library)), "dsm-bench-floor") as handle:
        handle.register(elements)
        for node in dm.root.walk():
            if node.schema.multi_instance and node.parent is not None:
                handle.register_row(node.parent.tables[node.schema.name].path, node.number)
        return run_consumer(tools, names, runs)


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1 and argv[1] == "consume":
        print(json.dumps(consume(argv[2], argv[5:], argv[3], int(argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dus", type=int, default=1000, help="DUs for the single gets (3 EUs each)")
    parser.add_argument("--partial-sizes", type=int, nargs="*", default=[25, 50, 100, 200])
    parser.add_argument("--partial-runs", type=int, default=3)
    args = parser.parse_args(argv[1:])
    tools = find_tools()
    if isinstance(tools, str):
        print(f"skipped: {tools}")
        return 0
    with running_broker(tools):
        bench_gets(tools, args.dus)
        print()
        header()
        for n in args.partial_sizes:
            bench_partial(tools, n, args.partial_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
