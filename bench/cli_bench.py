"""``dsmcli`` as an operator meets it, against baselines measured in the same run.

A real daemon holds N persisted DUs (1 EU each, ``daemon_bench.populate``) plus one
runnable busybox DU; every row alternates the measured command with its baseline, RUNS
times, and prints the medians, their ratio and the issue's target:

* start-up: ``dsmcli get <one parameter>`` against ``python -c pass`` (and the import of
  ``dsm_tr181.cli`` alone); target < 40 ms for the client's own start-up;
* ``dsmcli get Device.SoftwareModules.`` (every value, printed to a pipe); target < 150 ms
  (the same Get in-process on the daemon's tree, ``DataModel.get``, is printed for scale);
* ``dsmcli eu.start --wait`` until the EU is Active against ``runc run -d`` of the same
  bundle; target <= 1.5x (the EU is stopped and the container deleted between runs);
* ``dsmcli du.install --wait`` of a 50 MB ``file://`` bundle against ``tar -xf`` of it;
  target <= 1.3x (the DU is uninstalled between runs).

The daemon runs from an editable install in development: Python's start-up then includes
setuptools' import hook (``python -c pass`` pays it too, hence the ratio). The package's
bytecode is compiled first, as an installed wheel has it (``bench/as_installed.py``).

``eu.start --wait`` is a Python process's start-up plus a start through the daemon: the
row also prints the same request over the socket from this process (no start-up), so that
the two parts show.

Run as root: python bench/cli_bench.py [--dus 1000] [--runs 5] [--install-mb 50] [--rows startup get start install]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tools.sample_bundle import make_archive, make_bundle

from bench.as_installed import compiled
from bench.daemon_bench import populate
from bench.install_bench import build_archive
from tests.support.daemon import DsmDaemon

SM = "Device.SoftwareModules."
ROWS = ("startup", "get", "start", "install")


def dsmcli_command() -> list[str]:
    script = Path(sys.executable).parent / "dsmcli"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dsm_tr181.cli"]


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def alternate(runs: int, *measures: Callable[[], float]) -> list[float]:
    """Median seconds of each measure, run in turn ``runs`` times (after one warm-up turn)."""
    samples: list[list[float]] = [[] for _ in measures]
    for turn in range(runs + 1):
        for index, measure in enumerate(measures):
            elapsed = measure()
            if turn:
                samples[index].append(elapsed)
    return [statistics.median(s) for s in samples]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


class RuncRun:
    """``runc run -d`` of a bundle and its removal (not timed): the start baseline."""

    def __init__(self, bundle: Path, work: Path) -> None:
        self.bundle, self.root, self.work = bundle, work / "bare-root", work
        self.count = 0

    def __call__(self) -> float:
        self.count += 1
        container = f"bare-{self.count}"
        pid_file = self.work / f"{container}.pid"
        with open(os.devnull, "wb") as null:
            began = time.perf_counter()
            subprocess.run(
                ["runc", "--root", str(self.root), "run", "-d", "--bundle", str(self.bundle), "--pid-file",
                 str(pid_file), container],
                stdin=subprocess.DEVNULL, stdout=null, stderr=null, check=True, start_new_session=True,
            )  # fmt: skip
            elapsed = time.perf_counter() - began
        subprocess.run(["runc", "--root", str(self.root), "delete", "--force", container], check=True)
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dus", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--install-mb", type=int, default=50)
    parser.add_argument(
        "--rows", nargs="+", choices=ROWS, default=list(ROWS), help="the rows to measure (default: all)"
    )
    options = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        print("needs root and runc", file=sys.stderr)
        return 2
    compiled()
    work = Path(tempfile.mkdtemp(prefix="dsm-cli-bench-"))
    (work / "dsm").mkdir()
    # shared_read_seconds 0: each `dsmcli get` is read anew, not given the answer kept from the last run
    daemon = DsmDaemon(work / "dsm", lcm={"usage_interval": 60.0}, extra={"daemon": {"shared_read_seconds": 0}})
    try:
        daemon.state.mkdir(parents=True)
        populate(daemon.state, options.dus)
        daemon.start()
        env = {**os.environ, "DSM_SOCKET": str(daemon.socket)}
        cli = dsmcli_command()
        bundle = make_bundle(work / "busybox" / "sleeper", args=("/bin/sleep", "3600"))
        small = make_archive(bundle, work / "sleeper.tar")
        installed = daemon.client(timeout=None).follow(
            "du.install", {"ee_name": "default", "uri": str(small)}, lambda progress: None
        )
        eu_ref = installed["DUStateChange"]["ExecutionUnitRefList"].split(",")[0]
        euid = daemon.get(eu_ref + ".EUID")[eu_ref + ".EUID"]
        rows: list[tuple[str, float, float, str, bool]] = []  # label, ours, baseline, target, met

        if "startup" in options.rows or "get" in options.rows:
            pass_s, import_s, one_s = alternate(
                options.runs,
                lambda: timed([sys.executable, "-c", "pass"], env),
                lambda: timed([sys.executable, "-c", "import dsm_tr181.cli"], env),
                lambda: timed([*cli, "get", SM + "ExecEnvNumberOfEntries"], env),
            )
        if "startup" in options.rows:
            own = one_s - pass_s
            rows.append(("dsmcli get <one parameter>", one_s, pass_s, "client start-up < 40 ms", own < 0.040))
            print(f"python -c pass {pass_s * 1000:.1f} ms; import dsm_tr181.cli {import_s * 1000:.1f} ms; "
                  f"dsmcli get of one parameter {one_s * 1000:.1f} ms: "
                  f"{own * 1000:.1f} ms more than Python's own start")  # fmt: skip

        if "get" in options.rows:
            (whole_s,) = alternate(options.runs, lambda: timed([*cli, "get", SM], env))
            rows.append((f"dsmcli get {SM} ({options.dus} DUs)", whole_s, pass_s, "< 150 ms", whole_s < 0.150))

        def start_wait() -> float:
            elapsed = timed([*cli, "eu.start", "--wait", euid], env)
            timed([*cli, "eu.stop", "--wait", euid], env)
            return elapsed

        def socket_start_wait() -> float:
            client = daemon.client(timeout=None)
            began = time.perf_counter()
            client.follow("eu.start", {"uid": euid}, lambda progress: None)
            elapsed = time.perf_counter() - began
            client.follow("eu.stop", {"uid": euid}, lambda progress: None)
            return elapsed

        if "start" in options.rows:
            ours, socket_s, bare = alternate(options.runs, start_wait, socket_start_wait, RuncRun(bundle, work))
            rows.append(("dsmcli eu.start --wait (Active)", ours, bare, "<= 1.5x runc run -d", ours <= 1.5 * bare))
            rows.append(("  the same eu.start over the socket, no start-up", socket_s, bare, "(for scale)", True))

        if "install" in options.rows:
            rows.append(install_row(options, work, env, cli))

        print(f"\n{options.runs} alternated runs, medians:")
        print(f"{'':<46} {'ms':>9} {'baseline ms':>12} {'ratio':>7}  target")
        for label, value, base, target, met in rows:
            judged = target if target.startswith("(") else f"{target}: {verdict(met)}"
            print(f"{label:<46} {value * 1000:9.1f} {base * 1000:12.1f} {value / base:7.2f}  {judged}")
        return 0 if all(row[4] for row in rows) else 1
    finally:
        daemon.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def install_row(
    options: argparse.Namespace, work: Path, env: dict[str, str], cli: list[str]
) -> tuple[str, float, float, str, bool]:
    """``dsmcli du.install --wait`` of a file:// bundle against ``tar -xf`` of it."""
    archive = build_archive(work, options.install_mb)
    extract = work / "extract"

    def tar_x() -> float:
        shutil.rmtree(extract, ignore_errors=True)
        extract.mkdir()
        return timed(["tar", "-xf", str(archive), "-C", str(extract)], env)

    def install() -> float:
        began = time.perf_counter()
        done = subprocess.run(
            [*cli, "--json", "du.install", "--wait", "default", f"file://{archive}"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
        uuid = json.loads(done.stdout)["UUID"]
        timed([*cli, "du.uninstall", "--wait", uuid], env)
        return elapsed

    ours, tar_s = alternate(options.runs, install, tar_x)
    label = f"dsmcli du.install --wait ({options.install_mb} MB file://)"
    return (label, ours, tar_s, "<= 1.3x tar -xf", ours <= 1.3 * tar_s)


if __name__ == "__main__":
    raise SystemExit(main())
