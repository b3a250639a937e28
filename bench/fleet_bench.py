"""Fleet repository: resolve cost with 10 000 packages and 1 000 specs, and the server's CPU
per device poll when nothing changed.

1. JamesD's rule through the index (``Catalog.resolve``) against the literal full scan
   (``resolve_naive``) on the same world: 200 app names, 10 000 packages (labelsets over
   arch/fleet/firmware/model/tier), 1 000 specs (targets of one or two labels, 1-5 apps
   each), devices with five labels. Prints p50/p99 of each and the speed-up; both must give
   the same answers. Target: index p99 < 10 ms and >= 50x faster than the scan. The index's
   thread CPU time is printed too: on a loaded machine the wall-clock p99 measures the load.
2. A real ``dsm-fleet serve`` process (SQLite, HTTP on 127.0.0.1, rate limit off) and 1 000
   simulated devices, each with its own device token: one first poll each, then rounds of
   polls with the ETag they got (304). Prints the server's CPU time (utime+stime from /proc)
   per unchanged poll, against the first polls (each answer resolved, cached and the device
   recorded in the database) and polls without If-None-Match (the cached answer sent in full).

Run: python bench/fleet_bench.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dsm_tr181.fleet.client import FleetClient
from dsm_tr181.fleet.matching import Catalog, resolve_naive
from dsm_tr181.fleet.model import App, Package, Spec, labels
from dsm_tr181.fleet.repository import Role, TokenRecord
from dsm_tr181.fleet.sqlite_repo import SqliteRepository
from dsm_tr181.fleet.tokens import new_token, token_hash

LABELS = {
    "arch": ["amd64", "arm64", "arm", "mips"],
    "fleet": [f"f{i}" for i in range(20)],
    "firmware": [f"fw{i}" for i in range(10)],
    "model": [f"m{i}" for i in range(25)],
    "tier": ["bronze", "silver", "gold"],
}
APPS = [f"app{i}" for i in range(200)]


def world(rng: random.Random) -> tuple[list[Package], list[Spec]]:
    packages: dict[str, Package] = {}
    while len(packages) < 10_000:
        keys = rng.sample(sorted(LABELS), rng.randint(0, 3))
        p = Package(rng.choice(APPS), labels({k: rng.choice(LABELS[k]) for k in keys}), "1", "0" * 64)
        packages[p.id] = p
    specs = []
    for i in range(1_000):
        target = {k: rng.choice(LABELS[k]) for k in rng.sample(["fleet", "model", "firmware"], rng.randint(1, 2))}
        names = rng.sample(APPS, rng.randint(1, 5))
        specs.append(Spec(f"s{i}", labels(target), tuple(App(n) for n in names)))
    return list(packages.values()), specs


def device(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(values) for k, values in LABELS.items()}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_resolve() -> None:
    rng = random.Random(14)
    packages, specs = world(rng)
    started = time.perf_counter()
    catalog = Catalog(packages, specs)
    build_ms = (time.perf_counter() - started) * 1000
    devices = [device(rng) for _ in range(1000)]
    indexed, indexed_cpu, naive = [], [], []
    apps = 0
    for i, labels_ in enumerate(devices):
        t0, c0 = time.perf_counter(), time.thread_time()
        answer = catalog.resolve(labels_)
        indexed.append(time.perf_counter() - t0)
        indexed_cpu.append(time.thread_time() - c0)
        apps += len(answer.apps) + len(answer.problems)
        if i < 40:  # the scan is slow: 40 devices
            t0 = time.perf_counter()
            reference = resolve_naive(packages, specs, labels_)
            naive.append(time.perf_counter() - t0)
            assert reference.key() == answer.key(), "the index and the rule disagree"
    p50, p99 = percentile(indexed, 0.5) * 1000, percentile(indexed, 0.99) * 1000
    n50, n99 = percentile(naive, 0.5) * 1000, percentile(naive, 0.99) * 1000
    print(f"resolve, 10000 packages / 1000 specs, {apps / len(devices):.1f} apps per device "
          f"(index built in {build_ms:.0f} ms)")  # fmt: skip
    c50, c99 = percentile(indexed_cpu, 0.5) * 1000, percentile(indexed_cpu, 0.99) * 1000
    print(f"  index      p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (target p99 < 10 ms)")
    print(f"  index CPU  p50 {c50:8.3f} ms   p99 {c99:8.3f} ms   (thread CPU time: without other processes' load)")
    print(f"  full scan  p50 {n50:8.3f} ms   p99 {n99:8.3f} ms")
    print(f"  speed-up   p50 {n50 / p50:6.0f}x      p99 {n99 / p99:6.0f}x   (target >= 50x)")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_polls(devices: int = 1000, rounds: int = 3) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "fleet.db"
        repo = SqliteRepository(db)
        packages, specs = world(rng)
        for p in packages[:2000]:
            repo.add_package(p, None)
        for s in specs[:200]:
            repo.put_spec(s)
        tokens = []
        fleet_labels = [device(rng) for _ in range(devices)]
        for i in range(devices):
            token = new_token()
            repo.add_token(token_hash(token), TokenRecord(f"dev{i}", Role.DEVICE, labels(fleet_labels[i])))
            tokens.append(token)
        repo.close()
        server = subprocess.Popen(
            [sys.executable, "-m", "dsm_tr181.fleet.cli", "serve", "--db", str(db), "--listen", "127.0.0.1:0",
             "--resolve-rate", "0"], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1]

            def poll(i: int, etag: str) -> str:
                headers = {"If-None-Match": etag} if etag else {}
                reply = FleetClient(url, tokens[i]).request("POST", "/v1/resolve", {"labels": fleet_labels[i]}, headers)
                assert reply.status == (304 if etag else 200)
                return reply.headers["etag"]

            with ThreadPoolExecutor(8) as pool:
                before = cpu_seconds(server.pid)
                etags = list(pool.map(lambda i: poll(i, ""), range(devices)))  # first polls: answers cached
                first = (cpu_seconds(server.pid) - before) / devices
                before = cpu_seconds(server.pid)
                list(pool.map(lambda i: poll(i, ""), range(devices)))
                full = (cpu_seconds(server.pid) - before) / devices
                before = cpu_seconds(server.pid)
                for _ in range(rounds):
                    list(pool.map(lambda i: poll(i, etags[i]), range(devices)))
                unchanged = (cpu_seconds(server.pid) - before) / (devices * rounds)
        finally:
            server.terminate()
            server.wait(10)
    print(f"{devices} devices polling, server CPU per poll (HTTP, a new connection per poll)")
    print(f"  first poll (resolve, record device)  {first * 1e6:8.0f} us")
    print(f"  cached answer in full (200)          {full * 1e6:8.0f} us")
    print(f"  unchanged (304)                      {unchanged * 1e6:8.0f} us   "
          f"{first / unchanged:.1f}x less than a first poll")  # fmt: skip


if __name__ == "__main__":
    bench_resolve()
    bench_polls()
