"""Tree get cost with many DUs and EUs, against a plain dict walk over the same data.

Builds the real Device.SoftwareModules. tree with N DUs (N = 250, 500, 1000) in two
shapes: 1 EU per DU (what installs make) and 3 EUs per DU, and times, as the median of
several runs:
  * a partial-path get of ``Device.SoftwareModules.`` (every value of every object),
  * a wildcard get (``ExecutionUnit.*.Status``),
  * a search-expression get (``DeploymentUnit.[Status=="Installed"&&Vendor=="rdk"].Name``),
each printed with its per-instance cost and its ratio to the baseline: producing the same
answer ((object path, {param: value}) pairs) from plain dicts holding the same values (the
search baseline filters on the same two values).
Target: the full get under 15 ms at N=1000, and growth linear in N.

Through the front ends: ``--front-ends`` then runs bench/bus_bench.py at N=1000 (3 EUs
per DU), which times the same partial get over D-Bus (Get, GetBulk) and the control
socket against the in-process get, with the issue's targets.

Run: python bench/tree_bench.py [--front-ends]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from dsm_tr181.schema import load_schema
from dsm_tr181.tree.datamodel import DataModel

SM = "Device.SoftwareModules."


def build(n: int, eus_per_du: int = 3) -> DataModel:
    dm = DataModel(load_schema())
    ee = dm.add_row(f"{SM}ExecEnv.", {"Name": "default", "Enable": True, "Status": "Up", "Type": "OCI"})
    for i in range(n):
        eus = []
        for j in range(eus_per_du):
            eu = dm.add_row(
                f"{SM}ExecutionUnit.",
                {"EUID": f"eu-{i}-{j}", "Name": f"app{i}-{j}", "Status": "Idle", "ExecutionEnvRef": ee.ref},
            )
            eus.append(eu.ref)
        dm.add_row(
            f"{SM}DeploymentUnit.",
            {
                "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"du{i}")),
                "DUID": f"du{i}",
                "Name": f"app{i}",
                "Status": "Installed",
                "Vendor": "rdk" if i % 2 else "other",
                "Version": "1.0.0",
                "ExecutionEnvRef": ee.ref,
                "ExecutionUnitList": tuple(eus),
            },
        )
    return dm


def as_dicts(dm: DataModel) -> dict[str, dict[str, Any]]:
    """The same values as plain dicts: object path -> {param: value}."""
    return {node.path: dict(node.values) for node in dm.node(SM).walk()}


def dict_walk(
    data: dict[str, dict[str, Any]], prefix: str, param: str | None = None, where: dict[str, Any] | None = None
) -> list[tuple[str, dict]]:
    """What a get answers ((object path, {param: value}) pairs), taken from plain dicts;
    ``where``: only objects holding these values."""
    if param is None:
        return [(path, dict(values)) for path, values in data.items() if path.startswith(prefix)]
    rows = ((p, v) for p, v in data.items() if p.startswith(prefix) and param in v)
    if where:
        rows = ((p, v) for p, v in rows if all(v.get(k) == want for k, want in where.items()))
    return [(p, {param: v[param]}) for p, v in rows]


def median_ms(fn: Callable[[], object], runs: int = 15) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def measure(n: int, eus_per_du: int) -> float:
    """Prints the row of each query; returns the partial get's median (ms)."""
    dm = build(n, eus_per_du)
    data = as_dicts(dm)
    instances = (1 + eus_per_du) * n
    queries = {
        "partial": ([SM], lambda: dict_walk(data, SM)),
        "wildcard": ([f"{SM}ExecutionUnit.*.Status"], lambda: dict_walk(data, f"{SM}ExecutionUnit.", "Status")),
        "search": (
            [f'{SM}DeploymentUnit.[Status=="Installed"&&Vendor=="rdk"].Name'],
            lambda: dict_walk(data, f"{SM}DeploymentUnit.", "Name", {"Status": "Installed", "Vendor": "rdk"}),
        ),
    }
    partial_ms = 0.0
    for label, (paths, baseline) in queries.items():
        values = len(dm.get_values(paths))
        assert values == sum(len(params) for _, params in baseline()), label  # the baseline answers as much
        get_ms = median_ms(lambda paths=paths: dm.get(paths))
        base_ms = median_ms(baseline)
        per_inst = get_ms * 1000 / instances
        ratio = get_ms / base_ms
        print(f"{n:>6} {eus_per_du:>7} {label:<10} {values:>7} {get_ms:>8.2f} {per_inst:>8.2f} {base_ms:>8.2f} "
              f"{ratio:>6.2f}")  # fmt: skip
        if label == "partial":
            partial_ms = get_ms
    return partial_ms


def main() -> None:
    print(f"{'N DUs':>6} {'EUs/DU':>7} {'query':<10} {'values':>7} {'get ms':>8} {'µs/inst':>8} {'dict ms':>8} "
          f"{'ratio':>6}")  # fmt: skip
    full = {}
    for eus_per_du in (1, 3):
        for n in (250, 500, 1000):
            full[eus_per_du, n] = measure(n, eus_per_du)
    for eus_per_du in (1, 3):
        ms = full[eus_per_du, 1000]
        growth = ms / full[eus_per_du, 250] / 4
        print(f"target, {eus_per_du} EU(s) per DU: partial get at N=1000 under 15 ms: {ms:.1f} ms "
              f"{'met' if ms < 15 else 'NOT met'}; growth 250 -> 1000 against linear: {growth:.2f}")  # fmt: skip
    if "--front-ends" in sys.argv[1:]:
        from bench import bus_bench

        bus_bench.main(["--dus", "1000"])


if __name__ == "__main__":
    main()
