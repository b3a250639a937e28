"""Gets over a bus from another process against the same DataModel calls in-process.

The real Device.SoftwareModules. tree (``build`` from tree_bench: N DUs, 3N EUs) is
served from an asyncio loop in a background thread, as the daemon serves it. A client
in a separate process times

  * 1000 Gets of one parameter,
  * 20 partial-path Gets of ``Device.SoftwareModules.`` (every value of the tree),

and the same ``DataModel.get`` calls are timed in-process on the loop, plus the
provider's own work for the partial Get on the loop (DataModel + encoding the reply).
Prints p50/p99 in ms and the bus/in-process ratio of the medians.
Target: the partial Get over D-Bus under 100 ms at N=1000.

One section per bus in ``SECTIONS``: how to serve the tree, and the client that runs in
the other process. D-Bus: a private dbus-daemon, DbusProvider, a Gio client. An rbus
section is another entry (RbusProvider with its rtrouted; a consumer using rbus_ffi).

Run: python bench/bus_bench.py [--dus 1000] [--buses dbus]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tree_bench import SM, build
from dsm_tr181.tree.datamodel import DataModel

T = TypeVar("T")
GETS = 1000
PARTIAL_GETS = 20
ONE = SM + "ExecutionUnit.1.Status"


# ---- sections: one per bus ----


@dataclass(frozen=True)
class Section:
    # Serves ``dm`` from ``loop`` while the context lasts; yields the client's arguments.
    serve: Callable[[DataModel, asyncio.AbstractEventLoop], AbstractContextManager[list[str]]]
    # Runs in the client process: (its arguments, path, count) -> seconds per call, and
    # what one answer held.
    client: Callable[[list[str], str, int], tuple[list[float], str]]
    # What the provider does on the loop for one Get (the DataModel call and the reply's
    # encoding), if it can be called on its own.
    loop_work: Callable[[DataModel], Callable[[list[str]], object]] | None = None


@contextmanager
def serve_dbus(dm: DataModel, loop: asyncio.AbstractEventLoop) -> Iterator[list[str]]:
    from dsm_tr181.buses.dbus import DbusProvider
    from tests.support.dbusdaemon import private_bus

    with private_bus() as bus:
        provider = DbusProvider.create(dm, {"bus": bus.address}, loop)
        asyncio.run_coroutine_threadsafe(provider.start(), loop).result(60)
        try:
            yield [bus.address]
        finally:
            asyncio.run_coroutine_threadsafe(provider.close(), loop).result(60)


def dbus_client(args: list[str], path: str, count: int) -> tuple[list[float], str]:
    from gi.repository import Gio, GLib

    from dsm_tr181.buses.dbus import DbusConfig
    from dsm_tr181.buses.dbus_interface import INTERFACE

    [address] = args
    config = DbusConfig()
    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    connection = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
    request = GLib.Variant("(as)", ([path],))
    samples = []
    reply = None
    for _ in range(count):
        started = time.perf_counter()
        reply = connection.call_sync(
            config.name, config.object_path, INTERFACE, "Get", request, None, Gio.DBusCallFlags.NONE, 600_000, None
        )
        samples.append(time.perf_counter() - started)
    assert reply is not None
    answer = reply.get_child_value(0)
    connection.close_sync(None)
    return samples, f"{answer.n_children()} values, {answer.get_size() / 1e6:.1f} MB"


def dbus_loop_work(dm: DataModel) -> Callable[[list[str]], object]:
    from dsm_tr181.buses.dbus_service import DsmService

    return DsmService(dm).get


SECTIONS: dict[str, Section] = {"dbus": Section(serve_dbus, dbus_client, dbus_loop_work)}


# ---- the server side ----


class LoopThread:
    """The daemon's loop, in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, function: Callable[[], T]) -> T:
        future: Future[T] = Future()

        def call() -> None:
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return future.result(600)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def run_client(bus: str, args: list[str], path: str, count: int) -> tuple[list[float], str]:
    command = [sys.executable, __file__, "client", bus, path, str(count), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=True)
    samples, shape = json.loads(done.stdout.splitlines()[-1])
    return samples, shape


def pct(samples: list[float], q: int) -> float:
    return 1000 * statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def report(label: str, remote: list[float], local: list[float]) -> None:
    ratio = statistics.median(remote) / statistics.median(local)
    print(
        f"{label:<34} {pct(remote, 50):>10.3f} {pct(remote, 99):>10.3f} "
        f"{pct(local, 50):>10.3f} {pct(local, 99):>10.3f} {ratio:>8.1f}x"
    )


def bench(bus: str, n: int) -> None:
    section = SECTIONS[bus]
    loop = LoopThread()
    try:
        dm = loop.run(lambda: build(n))
        with section.serve(dm, loop.loop) as args:
            one, _ = run_client(bus, args, ONE, GETS)
            partial, shape = run_client(bus, args, SM, PARTIAL_GETS)
        one_local = loop.run(lambda: timed(lambda: dm.get([ONE]), GETS))
        partial_local = loop.run(lambda: timed(lambda: dm.get([SM]), PARTIAL_GETS))
        print(f"{bus}, N={n}: {n} DUs, {3 * n} EUs; a partial Get answers {shape}")
        print(f"{'':<34} {bus + ' p50':>10} {bus + ' p99':>10} {'local p50':>10} {'local p99':>10} {'ratio':>9}  (ms)")
        report(f"Get {ONE.removeprefix(SM)}", one, one_local)
        report(f"Get {SM}", partial, partial_local)
        if section.loop_work is not None:
            work = section.loop_work(dm)
            on_loop = loop.run(lambda: timed(lambda: work([SM]), PARTIAL_GETS))
            print(f"  partial Get, the provider's work on the loop (get + encoding): p50 {pct(on_loop, 50):.1f} ms")
    finally:
        loop.close()


def main(argv: list[str]) -> None:
    if argv[:1] == ["client"]:
        bus, path, count, *args = argv[1:]
        print(json.dumps(SECTIONS[bus].client(args, path, int(count))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dus", type=int, default=1000, help="deployment units in the tree (3 EUs each)")
    parser.add_argument("--buses", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    options = parser.parse_args(argv)
    for bus in options.buses:
        bench(bus, options.dus)


if __name__ == "__main__":
    main(sys.argv[1:])
