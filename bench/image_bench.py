"""InstallDU of an image from a registry against ``skopeo copy`` + ``umoci unpack`` of the same image.

A local registry (Debian's ``docker-registry`` on 127.0.0.1, plain http) holds 3-layer
images built here: the busybox layer plus two layers of incompressible files (plain tar
layers), 10 MB and 50 MB in all. For each size, median of RUNS:
  * baseline: ``skopeo copy docker://… oci:DIR`` (download into a local layout) then
    ``umoci unpack`` (extract the layers into a bundle) — two passes over the data;
  * InstallDU(URL=oci://…): the real daemon, request until DUStateChange! Installed —
    one pass: each layer streams from the registry into checked extraction, verified on the way;
    then uninstalled, so every run downloads everything again;
and prints the ratio (target <= 1.0) and the daemon's peak RSS (VmHWM; flat in image size).

Then the layer sharing: a second image on the same base (busybox + one big layer) and a
new top layer, installed while the first is installed: the bytes each install downloaded
(from its progress) and its time.

Run as root: python bench/image_bench.py   (needs docker-registry, skopeo, umoci)
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsm_tr181.sample_image import Entry, Layout, busybox_layer
from tests.support.daemon import DsmDaemon
from tests.support.registry import Registry

RUNS = 3
SIZES_MB = (10, 50)
SERVICE = {"Cmd": ["/bin/sh", "-c", "sleep 3600"]}


def big_layer(layout: Layout, name: str, size_mb: int) -> tuple[dict[str, Any], str]:
    entries = [Entry(name, kind="dir", mode=0o755)]
    entries += [Entry(f"{name}/blob{i:03d}", os.urandom(1 << 20)) for i in range(size_mb)]
    return layout.layer(entries, compress=False)


def build(layout: Layout, size_mb: int) -> None:
    """Tag ``{size}``: busybox + two halves; ``share-a``/``share-b``: a common base and a top each."""
    half = max(1, (size_mb - 2) // 2)
    layout.tag(
        layout.image([busybox_layer(), big_layer(layout, "a", half), big_layer(layout, "b", half)], SERVICE),
        f"{size_mb}",
    )


def build_shared(layout: Layout, size_mb: int) -> None:
    base = [layout.layer(busybox_layer()), big_layer(layout, "base", size_mb // 2)]
    for tag in ("share-a", "share-b"):
        layout.tag(layout.image([*base, big_layer(layout, tag, size_mb // 4)], SERVICE), tag)


def skopeo_umoci(registry: Registry, tag: str, work: Path) -> float:
    target = work / "baseline"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    started = time.perf_counter()
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{registry.host}/bench:{tag}", f"oci:{target / 'layout'}:{tag}"], check=True)  # fmt: skip
    subprocess.run(["umoci", "unpack", "--image", f"{target / 'layout'}:{tag}", str(target / "bundle")],
                   check=True, capture_output=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def install(daemon: DsmDaemon, url: str) -> tuple[float, int, str]:
    """Seconds, bytes downloaded (from the progress), the DU's uuid."""
    client = daemon.client(timeout=None)
    steps: list[Any] = []
    started = time.perf_counter()
    result = client.follow("du.install", {"ee_name": "default", "uri": url}, steps.append)
    elapsed = time.perf_counter() - started
    assert result["DUStateChange"]["CurrentState"] == "Installed", result
    downloads = [s.get("done", 0) for s in steps if s.get("kind") == "stage" and s.get("stage") == "download"]
    return elapsed, max(downloads, default=0), result["UUID"]


def uninstall(daemon: DsmDaemon, uuid: str) -> None:
    daemon.client(timeout=None).follow("du.uninstall", {"uuid": uuid}, lambda progress: None)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def start_daemon(work: Path, registry: Registry, name: str) -> DsmDaemon:
    (work / name).mkdir()
    image = {"plain_http": [registry.host]}
    return DsmDaemon(work / name, lcm={"usage_interval": 60.0}, extra={"packager.image": image}).start()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dsm-image-bench-"))
    try:
        layout = Layout(work / "images")
        for size in SIZES_MB:
            build(layout, size)
        build_shared(layout, SIZES_MB[-1])
        with Registry(work / "registry") as registry:
            for tag in [*(str(size) for size in SIZES_MB), "share-a", "share-b"]:
                registry.push(layout.root, tag, f"bench:{tag}")
            print(f"{'image':>7} {'skopeo+umoci s':>14} {'InstallDU s':>11} {'ratio':>6} {'daemon peak RSS MiB':>20}")
            for size in SIZES_MB:
                daemon = start_daemon(work, registry, f"daemon{size}")
                try:
                    base = statistics.median(skopeo_umoci(registry, str(size), work) for _ in range(RUNS))
                    times = []
                    for _ in range(RUNS):
                        elapsed, _, uuid = install(daemon, registry.ref(f"bench:{size}"))
                        times.append(elapsed)
                        uninstall(daemon, uuid)
                    ours = statistics.median(times)
                    assert daemon.process is not None
                    peak = peak_rss_mib(daemon.process.pid)
                finally:
                    daemon.cleanup()
                print(f"{size:>5}MB {base:>14.3f} {ours:>11.3f} {ours / base:>6.2f} {peak:>20.1f}")
            daemon = start_daemon(work, registry, "daemon-shared")
            try:
                first_s, first_bytes, _ = install(daemon, registry.ref("bench:share-a"))
                second_s, second_bytes, _ = install(daemon, registry.ref("bench:share-b"))
            finally:
                daemon.cleanup()
            print(f"shared base: first image {first_bytes / 1e6:.1f} MB downloaded in {first_s:.3f} s, "
                  f"second {second_bytes / 1e6:.1f} MB in {second_s:.3f} s "
                  f"(bytes ratio {second_bytes / first_bytes:.2f}, time ratio {second_s / first_s:.2f})")  # fmt: skip
        print("targets: ratio <= 1.0; peak RSS the same for both sizes; the second image downloads only its top")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
