"""Latency of a small get, and the daemon's memory, while other clients and operations stress it.

Starts the real ``dsm`` daemon on a store of N persisted DUs (as daemon_bench.py makes
them), then measures the p99 latency of a one-parameter get from another process:
  * idle (the baseline, same run), ``--settle`` seconds after the start: the start-up's first
    DiskSpaceInUse sweep of N DUs is work, and a baseline taken during it flatters every ratio,
  (a) while a DU archive of E entries installs (100k by default),
  (b) while two clients read the whole tree in a loop,
  (a+b) the install of (a) again, with the two readers of (b),
  (c) while 50 ``events`` clients that never read exist and 2000 sets publish notifications,
each as a ratio to the idle p99 (target <= 3x), and the daemon's RSS before and after each
phase, the phase's clients gone (target: back within 5 MiB).

The floor: every get to the daemon is followed by the same get to a bare asyncio server in a
process of its own (a fixed answer, nothing else to do), under the same load. On 2 cores
two CPU-bound clients delay any process's turn on the CPU; the floor shows how much of a
phase's p99 is that, not the daemon.

Issue 11 item 7 (neither an install nor whole-tree reads starve the other; target <= 2x):
the install timed with no client at all, then with the two readers of (b) and no prober.
Then (d) C install/uninstall cycles of a small DU: RSS after the first 10% of them and at
the end, as KiB per cycle.

Run as root: python bench/stress_bench.py [--entries 100000] [--dus 1000] [--cycles 2000] [--dir /dev/shm] [--settle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_bench import memory_kib, populate  # the same store the restart bench uses
from dsm_tools.sample_bundle import oci_config

from dsm_tr181.control_client import HEADER, ControlClient, encode_frame
from tests.support.daemon import DsmDaemon

SMALL = {"paths": ["Device.SoftwareModules.ExecEnv.1.Name"]}
SAMPLES = 2000  # 2 s or more of gets: fewer make the p99 a matter of the few slowest
SUBSCRIBERS = 50
SETS = 2000


def many_entries(path: Path, entries: int) -> Path:
    """A DU archive: config.json, rootfs/ and ``entries`` one-byte files."""
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes | None = None) -> None:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("config.json", json.dumps(oci_config(["/bin/true"])).encode())
        add("rootfs")
        for n in range(entries):
            if n % 1000 == 0:
                add(f"rootfs/d{n // 1000}")
            add(f"rootfs/d{n // 1000}/f{n}", b"x")
    return path


def bare_server(socket_path: str, started: Any, stop: Any) -> None:
    """The floor's server: the daemon's framing, one fixed small answer, nothing else to do."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        request = json.loads(await reader.readexactly(length))
        writer.write(encode_frame({"id": request.get("id"), "result": {SMALL["paths"][0]: "default"}}))
        await writer.drain()
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_unix_server(answer, socket_path)
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(serve())


def p99(dsm: DsmDaemon, floor: str, until: Callable[[], bool] | None = None) -> tuple[float, float]:
    """p99 (ms) of small gets one after another, ``SAMPLES`` of them (or until ``until()``),
    to the daemon and, each followed by one, to the bare server at ``floor``."""
    clients = (dsm.client(), ControlClient(floor))
    latencies: tuple[list[float], list[float]] = ([], [])
    while len(latencies[0]) < SAMPLES or (until is not None and not until()):
        for client, measured in zip(clients, latencies, strict=True):
            started = time.perf_counter()
            client.call("get", SMALL)
            measured.append(time.perf_counter() - started)
        if until is not None and until() and len(latencies[0]) >= 20:
            break
    ours, bare = (sorted(measured)[min(len(measured) - 1, int(len(measured) * 0.99))] * 1000 for measured in latencies)
    return ours, bare


def rss_mib(dsm: DsmDaemon) -> float:
    assert dsm.process is not None
    return memory_kib(dsm.process.pid)["VmRSS"] / 1024


@contextmanager
def background(work: Callable[[threading.Event], None], threads: int = 1) -> Iterator[threading.Event]:
    stop = threading.Event()
    running = [threading.Thread(target=work, args=(stop,), daemon=True) for _ in range(threads)]
    for thread in running:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in running:
            thread.join(600)


def install(dsm: DsmDaemon, archive: Path) -> str:
    """Installs ``archive``; its DeploymentUnit path."""
    client = dsm.client(timeout=None)
    args = {"URL": f"file://{archive}", "ExecutionEnvRef": "Device.SoftwareModules.ExecEnv.1"}
    result = client.follow("operate", {"command": "Device.SoftwareModules.InstallDU()", "args": args},
                           lambda progress: None)  # fmt: skip
    return str(result.get("DUStateChange", {}).get("DeploymentUnitRef", ""))


def uninstall(dsm: DsmDaemon, du: str) -> None:
    dsm.client(timeout=None).follow("operate", {"command": du + ".Uninstall()", "args": {}}, lambda progress: None)


def timed_install(dsm: DsmDaemon, archive: Path, readers: int = 0) -> float:
    """Seconds an install of ``archive`` takes, ``readers`` whole-tree readers running."""
    with in_processes(read_whole_tree, (str(dsm.socket),), count=readers) if readers else nullcontext():
        started = time.perf_counter()
        du = install(dsm, archive)
        elapsed = time.perf_counter() - started
    uninstall(dsm, du)
    return elapsed


def phase_install(dsm: DsmDaemon, floor: str, archive: Path, readers: int = 0) -> tuple[float, float]:
    """p99s during an install of ``archive`` (``readers`` whole-tree readers running too)."""
    done = threading.Event()
    outcome: list[str] = []

    def installing(stop: threading.Event) -> None:
        try:
            outcome.append(install(dsm, archive))
        finally:
            done.set()

    readers_running = in_processes(read_whole_tree, (str(dsm.socket),), count=readers) if readers else nullcontext()
    with readers_running, background(installing):
        latency = p99(dsm, floor, until=done.is_set)
    (du,) = outcome
    uninstall(dsm, du)
    return latency


@contextmanager
def in_processes(work: Callable[..., None], args: tuple[object, ...], count: int = 1) -> Iterator[None]:
    """``work(*args, started, stop)`` in ``count`` processes of their own: a client's decoding
    in this process would hold the GIL the measuring client needs, and count as the daemon's."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    started = [context.Event() for _ in range(count)]
    workers = [context.Process(target=work, args=(*args, event, stop), daemon=True) for event in started]
    for worker in workers:
        worker.start()
    try:
        for event in started:
            event.wait(60)
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(600)


def read_whole_tree(socket_path: str, started: Any, stop: Any) -> None:
    client = ControlClient(socket_path)
    while not stop.is_set():
        client.call("get", {"paths": ["Device."]})
        started.set()


def phase_whole_tree(dsm: DsmDaemon, floor: str) -> tuple[float, float]:
    with in_processes(read_whole_tree, (str(dsm.socket),), count=2):
        return p99(dsm, floor)


def set_values(socket_path: str, started: Any, stop: Any) -> None:
    client = ControlClient(socket_path)
    eu = "Device.SoftwareModules.ExecutionUnit.1.AutoStart"
    for n in range(SETS):
        if stop.is_set():
            return
        client.call("set", {"values": {eu: "true" if n % 2 else "false"}})
        started.set()


def phase_subscribers(dsm: DsmDaemon, floor: str) -> tuple[float, float]:
    request = json.dumps({"id": 1, "method": "events", "params": {}}).encode()
    sleepers = []
    for _ in range(SUBSCRIBERS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(dsm.socket))
        sock.sendall(HEADER.pack(len(request)) + request)
        sleepers.append(sock)  # never read
    try:
        with in_processes(set_values, (str(dsm.socket),)):
            return p99(dsm, floor)
    finally:
        for sock in sleepers:
            sock.close()


def cycles(dsm: DsmDaemon, archive: Path, count: int) -> tuple[float, float]:
    """RSS (MiB) after the first tenth of ``count`` install/uninstall cycles and after all of them."""
    warm = 0.0
    for n in range(count):
        uninstall(dsm, install(dsm, archive))
        if n + 1 == max(1, count // 10):
            warm = rss_mib(dsm)
    return warm, rss_mib(dsm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dus", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="work directory (a tmpfs keeps the disk out of it)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds from start to idle p99")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsm-stress-", dir=options.dir))
    floor = str(work / "bare.sock")
    try:
        archive = many_entries(work / "many.tar", options.entries)
        small = many_entries(work / "small.tar", 10)
        limits = {"max_entries": options.entries + options.entries // 1000 + 10}  # the files and their folders
        dsm = DsmDaemon(work, lcm={"usage_interval": 60.0}, extra={"packager.tar": limits})
        dsm.state.mkdir(parents=True)
        populate(dsm.state, options.dus)
        dsm.start()
        try:
            with in_processes(bare_server, (floor,)):
                time.sleep(options.settle)  # past the start-up's work (its first DiskSpaceInUse sweep)
                idle = p99(dsm, floor)
                rows = []
                for name, phase in (
                    (f"(a) install of {options.entries} entries", lambda: phase_install(dsm, floor, archive)),
                    ("(b) 2 whole-tree readers", lambda: phase_whole_tree(dsm, floor)),
                    ("(a+b) the install with 2 readers", lambda: phase_install(dsm, floor, archive, readers=2)),
                    (f"(c) {SUBSCRIBERS} non-reading subscribers", lambda: phase_subscribers(dsm, floor)),
                ):
                    before = rss_mib(dsm)
                    latency = phase()
                    time.sleep(1.0)  # the phase's clients are gone: let the daemon settle
                    rows.append((name, latency, before, rss_mib(dsm)))
            alone, loaded = timed_install(dsm, archive), timed_install(dsm, archive, readers=2)
            warm, end = cycles(dsm, small, options.cycles) if options.cycles else (0.0, 0.0)
        finally:
            dsm.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{options.dus} persisted DUs; idle p99 of a small get: {idle[0]:.2f} ms "
          f"(the bare server's: {idle[1]:.2f} ms)")  # fmt: skip
    print(f"{'phase':<38} {'p99 ms':>8} {'x idle':>7} {'floor ms':>9} {'x idle':>7} {'RSS before':>11} {'after':>7} "
          f"{'delta':>7}")  # fmt: skip
    for name, (ours, bare), before, after in rows:
        print(f"{name:<38} {ours:>8.2f} {ours / idle[0]:>7.1f} {bare:>9.2f} {bare / idle[1]:>7.1f} {before:>10.1f}M "
              f"{after:>6.1f}M {after - before:>+6.1f}M")  # fmt: skip
    met = all(ours / idle[0] <= 3 for _, (ours, _), _, _ in rows)
    back = all(after - before <= 5 for _, _, before, after in rows)
    print(f"install of {options.entries} entries: {alone:.1f} s alone, {loaded:.1f} s with 2 whole-tree readers: "
          f"{loaded / alone:.2f}x (target <= 2x: {'met' if loaded <= 2 * alone else 'MISSED'})")  # fmt: skip
    if options.cycles:
        creep = (end - warm) * 1024 / max(1, options.cycles - options.cycles // 10)
        print(f"(d) {options.cycles} install/uninstall cycles: RSS {warm:.1f}M after the first tenth, "
              f"{end:.1f}M at the end: {creep:+.2f} KiB per cycle")  # fmt: skip
    print(f"targets: p99 <= 3x idle ({'met' if met else 'MISSED'}), RSS back within 5 MiB "
          f"({'met' if back else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
