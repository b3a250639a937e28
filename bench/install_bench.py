"""InstallDU throughput and memory against ``curl | tar -x`` and ``tar -xf`` of the same archive.

For bundles of 10 MB and 50 MB (incompressible files in rootfs/, plain .tar), measures,
alternating each install with its baseline RUNS times (medians):
  * over http (the same HTTP server on 127.0.0.1): ``curl -s URL | tar -x -b 2048`` into
    an empty directory, against InstallDU of the URL;
  * from a local file: ``tar -xf FILE`` against InstallDU of ``file://FILE`` (read once,
    hashed while it unpacks);
InstallDU runs from the request to the daemon until DUStateChange! Installed (the real
daemon: hashed, checked member-by-member extraction, then the journal, rows and event).
Prints the ratios (targets: http <= 1.25, file <= 1.3) and the daemon's peak RSS (VmHWM,
target < 60 MB, independent of the bundle size: the archive is streamed, never held in
memory), each with whether it is met.

Run as root: python bench/install_bench.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tr181.sample_bundle import make_archive, make_bundle
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

RUNS = 5
TARGETS = {"http": 1.25, "file": 1.3}
PEAK_MIB = 60
SIZES_MB = (10, 50)


def build_archive(directory: Path, size_mb: int) -> Path:
    bundle = make_bundle(directory / f"bundle{size_mb}" / f"big{size_mb}", version=f"{size_mb}.0")
    data = bundle / "rootfs" / "data"
    data.mkdir()
    for index in range(size_mb):
        (data / f"blob{index:03d}").write_bytes(os.urandom(1 << 20))
    archive = make_archive(bundle, directory / f"big{size_mb}.tar")
    shutil.rmtree(bundle.parent)
    return archive


def curl_tar(url: str, work: Path) -> float:
    target = work / "extract"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    started = time.perf_counter()
    curl = subprocess.Popen(["curl", "-s", "-f", url], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-b", "2048", "-C", str(target)], stdin=curl.stdout, check=True)
    assert curl.stdout is not None
    curl.stdout.close()
    if curl.wait() != 0 or tar.returncode != 0:
        raise RuntimeError("curl | tar failed")
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def tar_xf(archive: Path, work: Path) -> float:
    target = work / "extract"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    started = time.perf_counter()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(target)], check=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def install(daemon: DsmDaemon, url: str) -> float:
    client = daemon.client(timeout=None)
    started = time.perf_counter()
    result = client.follow("du.install", {"ee_name": "default", "uri": url}, lambda progress: None)
    elapsed = time.perf_counter() - started
    assert result["DUStateChange"]["CurrentState"] == "Installed", result
    uuid = result["UUID"]
    client.follow("du.uninstall", {"uuid": uuid}, lambda progress: None)
    return elapsed


def alternated(ours: Callable[[], float], baseline: Callable[[], float]) -> tuple[float, float]:
    """Medians of ``ours`` and ``baseline`` run in turn RUNS times, after a warm-up turn."""
    samples: tuple[list[float], list[float]] = ([], [])
    for turn in range(RUNS + 1):
        for index, measure in enumerate((ours, baseline)):
            elapsed = measure()
            if turn:
                samples[index].append(elapsed)
    return statistics.median(samples[0]), statistics.median(samples[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dsm-install-bench-"))
    met = []
    try:
        archives = {size: build_archive(work, size) for size in SIZES_MB}
        with FileServer(work) as server:
            print(f"{RUNS} alternated runs, medians")
            print(f"{'bundle':>7} {'source':>6} {'baseline s':>10} {'InstallDU s':>11} {'ratio':>6}  target")
            peaks = []
            for size, archive in archives.items():
                (work / f"daemon{size}").mkdir()
                daemon = DsmDaemon(work / f"daemon{size}", lcm={"usage_interval": 60.0}).start()
                try:
                    url = server.url(archive.name)
                    runs = {
                        "http": (partial(install, daemon, url), partial(curl_tar, url, work)),
                        "file": (partial(install, daemon, f"file://{archive}"), partial(tar_xf, archive, work)),
                    }
                    for source, (ours_run, base_run) in runs.items():
                        ours, base = alternated(ours_run, base_run)
                        ok = ours / base <= TARGETS[source]
                        met.append(ok)
                        print(f"{size:>5}MB {source:>6} {base:>10.3f} {ours:>11.3f} {ours / base:>6.2f}  "
                              f"<= {TARGETS[source]}: {'met' if ok else 'NOT met'}")  # fmt: skip
                    assert daemon.process is not None
                    peaks.append(peak_rss_mib(daemon.process.pid))
                finally:
                    daemon.cleanup()
            ok = max(peaks) < PEAK_MIB
            met.append(ok)
            sizes = ", ".join(f"{size} MB: {peak:.1f} MiB" for size, peak in zip(archives, peaks, strict=True))
            print(f"daemon peak RSS ({sizes}) < {PEAK_MIB} MiB: {'met' if ok else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
