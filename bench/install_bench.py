"""InstallDU throughput and memory against ``curl | tar -x`` of the same archive.

For bundles of 10 MB and 50 MB (incompressible files in rootfs/, plain .tar), served by
the same HTTP server on 127.0.0.1, measures (median of RUNS):
  * baseline: ``curl -s URL | tar -x`` into an empty directory,
  * InstallDU: from the request to the daemon until DUStateChange! Installed (the real
    daemon: the download hashed and, with no digest to check first, unpacked as it
    arrives — member-by-member checked extraction — then the journal, rows and event),
and prints the ratio (target <= 1.25) and the daemon's peak RSS (VmHWM, target < 60 MB,
independent of the bundle size: the archive is streamed, never held in memory).

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tr181.sample_bundle import make_archive, make_bundle
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

RUNS = 3
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
    tar = subprocess.run(["tar", "-x", "-C", str(target)], stdin=curl.stdout, check=True)
    assert curl.stdout is not None
    curl.stdout.close()
    if curl.wait() != 0 or tar.returncode != 0:
        raise RuntimeError("curl | tar failed")
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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dsm-install-bench-"))
    try:
        archives = {size: build_archive(work, size) for size in SIZES_MB}
        with FileServer(work) as server:
            print(f"{'bundle':>7} {'curl|tar s':>10} {'InstallDU s':>11} {'ratio':>6} {'daemon peak RSS MiB':>20}")
            for size, archive in archives.items():
                url = server.url(archive.name)
                (work / f"daemon{size}").mkdir()
                daemon = DsmDaemon(work / f"daemon{size}", lcm={"usage_interval": 60.0}).start()
                try:
                    base = statistics.median(curl_tar(url, work) for _ in range(RUNS))
                    ours = statistics.median(install(daemon, url) for _ in range(RUNS))
                    assert daemon.process is not None
                    peak = peak_rss_mib(daemon.process.pid)
                finally:
                    daemon.cleanup()
                print(f"{size:>5}MB {base:>10.3f} {ours:>11.3f} {ours / base:>6.2f} {peak:>20.1f}")
        print("targets: ratio <= 1.25, peak RSS < 60 MiB and the same for both sizes")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
