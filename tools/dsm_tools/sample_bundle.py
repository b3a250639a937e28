"""Build a small busybox-based OCI bundle and its DU archive.

Used by the README demo and by the tests: ``python -m dsm_tools.sample_bundle OUT.tar``
writes ``OUT.tar`` holding ``NAME/config.json`` and ``NAME/rootfs/`` built from the
static busybox of Debian's ``busybox-static`` package.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "sleep", "cat", "ls", "true", "false", "env", "date", "httpd", "wc", "yes", "head")


def oci_config(args: Sequence[str], *, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A minimal rootless-compatible OCI runtime-spec 1.0.2 config for busybox."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {
                key: ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
                for key in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "dsm",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=4m"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "annotations": dict(annotations or {}),
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def make_bundle(
    dest: Path,
    *,
    # PID 1 ignores signals it has no handler for: the trap lets a stop end at once
    # instead of at the SIGKILL after the grace period.
    args: Sequence[str] = ("/bin/sh", "-c", "trap 'exit 0' TERM; echo hello from busybox; sleep 3600 & wait"),
    version: str = "1.0.0",
    vendor: str = "rdk",
    description: str = "busybox sample",
    busybox: Path = BUSYBOX,
) -> Path:
    """Write an OCI bundle (config.json + rootfs/) into ``dest`` and return it."""
    rootfs = dest / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    for sub in ("proc", "dev", "sys", "tmp", "etc"):
        (rootfs / sub).mkdir(exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    notes = {
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.vendor": vendor,
        "org.opencontainers.image.title": dest.name,
        "org.opencontainers.image.description": description,
    }
    (dest / "config.json").write_text(json.dumps(oci_config(args, annotations=notes), indent=2))
    return dest


def make_archive(bundle: Path, out: Path, *, flat: bool = False) -> Path:
    """Archive ``bundle`` to ``out`` (.tar, .tar.gz or .tar.xz by its suffix).

    By default the archive holds one top folder named after the bundle
    (``NAME/config.json``); ``flat=True`` puts config.json and rootfs/ at the top.
    """
    mode = {".gz": "w:gz", ".xz": "w:xz"}.get(out.suffix, "w")
    with tarfile.open(out, mode) as tar:
        if flat:
            for child in sorted(bundle.iterdir()):
                tar.add(child, arcname=child.name)
        else:
            tar.add(bundle, arcname=bundle.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a busybox OCI bundle DU archive.")
    parser.add_argument("out", type=Path, help="archive to write (.tar, .tar.gz, .tar.xz)")
    parser.add_argument("--name", default="hello", help="bundle (top folder) name")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--vendor", default="rdk")
    parser.add_argument("--flat", action="store_true", help="no top folder in the archive")
    parser.add_argument("command", nargs="*", help="container command (default: print and sleep)")
    opts = parser.parse_args(argv)
    work = opts.out.parent / f".{opts.name}.bundle"
    shutil.rmtree(work, ignore_errors=True)
    try:
        bundle = work / opts.name
        kwargs: dict[str, Any] = {"version": opts.version, "vendor": opts.vendor}
        if opts.command:
            kwargs["args"] = opts.command
        make_bundle(bundle, **kwargs)
        make_archive(bundle, opts.out, flat=opts.flat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(opts.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
