"""The README demo: the daemon with its embedded defaults, a sample DU installed and run.

``python -m dsm_tr181.demo [WORKDIR]`` (as root, with runc and busybox-static installed):

1. builds a busybox OCI bundle archive (``hello.tar.gz``) in WORKDIR (default ``./demo``);
2. starts ``dsm`` with no configuration file — only its state directory and control socket
   are placed in WORKDIR so the demo leaves the system alone — and waits until it is ready;
3. runs, and shows, the dsmcli commands an operator would: ``ee.list``,
   ``du.install default file://…/hello.tar.gz --wait``, ``eu.start``, ``eu.detail`` (its confinement), ``eu.list``, the
   container's output, ``get Device.SoftwareModules.`` (the tree), ``eu.stop``,
   ``du.uninstall --wait``;
4. stops the daemon.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dsm_tr181.sample_bundle import make_archive, make_bundle

EU = "default-1"


def _dsmcli(sock: Path, *args: str) -> str:
    print(f"\n$ dsmcli {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "dsm_tr181.cli", *args],
        env={**os.environ, "DSM_SOCKET": str(sock)},
        capture_output=True,
        text=True,
        check=False,
    )
    print((done.stdout + done.stderr).rstrip(), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: dsmcli {args[0]} failed (exit {done.returncode})")
    return done.stdout


def _start_daemon(work: Path) -> subprocess.Popen[bytes]:
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        command = [sys.executable, "-m", "dsm_tr181.daemon", "--state-dir", str(work / "state"),
                   "--socket", str(work / "dsm.sock")]  # fmt: skip
        print(f"$ dsm --state-dir {work / 'state'} --socket {work / 'dsm.sock'}   (log: {work / 'dsm.log'})")
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        env.pop("DSM_CONFIG_FILE", None)
        with (work / "dsm.log").open("wb") as log:
            daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
        except TimeoutError:
            daemon.kill()
            raise SystemExit(f"demo: dsm did not become ready; see {work / 'dsm.log'}") from None
    print("dsm is ready", flush=True)
    return daemon


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dsm-tr181 demo: install and run a busybox DU")
    parser.add_argument("workdir", nargs="?", type=Path, default=Path("demo"))
    work = parser.parse_args(argv).workdir.resolve()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        print("demo: run as root on a machine with runc (apt-get install runc busybox-static)", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = make_archive(
        make_bundle(work / "bundle" / "hello", args=("/bin/sh", "-c", "trap 'exit 0' TERM; while true; do "
                                                     "echo hello from busybox; sleep 1; done"),
                    description="the dsm-tr181 demo"),
        work / "hello.tar.gz",
    )  # fmt: skip
    print(f"built {archive} (busybox OCI bundle)")
    daemon = _start_daemon(work)
    sock = work / "dsm.sock"
    try:
        _dsmcli(sock, "ee.list")
        _dsmcli(sock, "du.install", "default", f"file://{archive}", "--wait")
        _dsmcli(sock, "eu.start", EU)
        _dsmcli(sock, "eu.detail", EU)  # with the confinement it runs under
        time.sleep(2.5)
        _dsmcli(sock, "eu.list")
        log = work / "state" / "logs" / f"{EU}.log"
        print(f"\n$ cat {log}\n{log.read_text().rstrip()}")
        _dsmcli(sock, "get", "Device.SoftwareModules.")
        _dsmcli(sock, "eu.stop", EU)
        _dsmcli(sock, "du.uninstall", "1", "--wait")
        _dsmcli(sock, "du.list")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    print("\ndemo done: dsm stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
