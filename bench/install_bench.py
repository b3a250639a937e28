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

Signed row (50 MB): the same archive installed with a Signature (detached CMS by a signer
whose CA's CA is trusted, fetched from the same server)
against the same archive installed unsigned with its digest to check (``<url>.sha256``):
both download into a temporary file hashed on the way and unpack once it is verified, so
the ratio shows what verification costs beyond the streaming digest (target <= 1.05; no
second read). The ratio against the unsigned streamed install is printed too: a signed
archive cannot be unpacked while it downloads (nothing is unpacked before it verifies).

Run as root: python bench/install_bench.py
"""

from __future__ import annotations

import hashlib
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
from tests.support.pki import Pki

RUNS = 5
TARGETS = {"http": 1.25, "file": 1.3}
PEAK_MIB = 60
SIGNED_RUNS = 9  # the three installs of the signed row differ little: more runs against the noise
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


def install(daemon: DsmDaemon, url: str, signature: str = "") -> float:
    client = daemon.client(timeout=None)
    args = {"URL": url, "ExecutionEnvRef": "Device.SoftwareModules.ExecEnv.1"}
    if signature:
        args["Signature"] = signature
    started = time.perf_counter()
    result = client.follow("operate", {"command": "Device.SoftwareModules.InstallDU()", "args": args}, lambda p: None)
    elapsed = time.perf_counter() - started
    event = result["DUStateChange"]
    assert event["CurrentState"] == "Installed", result
    client.follow("operate", {"command": event["DeploymentUnitRef"] + ".Uninstall()", "args": {}}, lambda p: None)
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


def signed_row(work: Path, server: FileServer, archive: Path) -> None:
    """Signed vs unsigned-with-digest vs unsigned-streamed installs of the same archive."""
    pki = Pki.create()
    pki.root.write(work / "trust", "vendor-root")
    data = archive.read_bytes()
    archive.with_name(archive.name + ".p7s").write_bytes(pki.sign(data))
    signature = server.url(archive.name + ".p7s")
    digested = archive.with_name("digested-" + archive.name)
    shutil.copyfile(archive, digested)
    digested.with_name(digested.name + ".sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    del data
    (work / "daemon-signed").mkdir()
    lcm = {"usage_interval": 60.0, "trust_dir": str(work / "trust")}
    execenvs = [{"name": "default", "signers": ["vendor-root"]}]
    daemon = DsmDaemon(work / "daemon-signed", lcm=lcm, execenvs=execenvs).start()
    assert daemon.process is not None
    pid = daemon.process.pid
    kinds = {"signed": (archive, signature), "digest": (digested, ""), "streamed": (archive, "")}
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        names = list(kinds)
        for run in range(SIGNED_RUNS):  # interleaved, in turn first, so that no kind gets the quieter moments
            for kind in names[run % 3 :] + names[: run % 3]:
                path, sig = kinds[kind]
                before = cpu_seconds(pid)
                wall[kind].append(install(daemon, server.url(path.name), sig))
                cpu[kind].append(cpu_seconds(pid) - before)
    finally:
        daemon.cleanup()
    size = archive.stat().st_size >> 20
    print(f"\n{size}MB archive, median of {SIGNED_RUNS}: wall s and daemon CPU s (user+sys, install+uninstall)")
    print(f"{'':>22} {'wall s':>7} {'ratio':>6} {'CPU s':>6} {'ratio':>6}")
    for kind, label in (("signed", "signed"), ("digest", "unsigned + sha256"), ("streamed", "unsigned streamed")):
        w, c = statistics.median(wall[kind]), statistics.median(cpu[kind])
        ws, cs = statistics.median(wall["signed"]), statistics.median(cpu["signed"])
        print(f"{label:>22} {w:>7.3f} {ws / w:>6.2f} {c:>6.3f} {cs / c:>6.2f}")
    print("ratios: signed / this row; target signed / unsigned+sha256 <= 1.05")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            signed_row(work, server, archives[SIZES_MB[-1]])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
