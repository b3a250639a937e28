"""The README's managed-services worked example runs as written (the real dsmcli against a
real daemon and runc), with the example URL and host path replaced by the test's own; the
daemon runs in a network namespace the test creates (bridged networking, a port mapping)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.lcm_helpers import DU, build_du, eventually, needs_runc, operate, rows, value
from tests.support.daemon import DsmDaemon

pyroute2 = pytest.importorskip("pyroute2")
pytestmark = [
    pytest.mark.integration,
    needs_runc,
    pytest.mark.skipif(shutil.which("iptables") is None or shutil.which("nsenter") is None,
                       reason="needs iptables and nsenter"),
]  # fmt: skip

README = Path(__file__).resolve().parents[2] / "README.md"
SCRIPT = (
    "trap 'exit 0' TERM; echo GREETING=$GREETING; cat /config/app.conf; df -k /data | tail -1; "
    "httpd -f -p 80 -h /config & wait"
)


def example() -> str:
    return README.read_text().split("<!-- services-example -->\n```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_services_example_runs(tmp_path: Path) -> None:
    config = tmp_path / "app-config"
    config.mkdir()
    (config / "app.conf").write_text("mode=demo\n")
    execenv = {"name": "default", "allocated_memory_kib": 262144, "allocated_cpu_percent": 50,
               "network": "bridged", "allowed_host_paths": [str(config)]}  # fmt: skip
    (tmp_path / "dsm").mkdir()
    dsm = DsmDaemon(tmp_path / "dsm", execenvs=[execenv])
    archive = build_du(tmp_path, "hello", args=("/bin/sh", "-c", SCRIPT))
    script = example().replace("https://repo.example.com/hello.tar", archive.as_uri())
    script = script.replace("/srv/app-config", str(config))
    env = {**os.environ, "DSM_SOCKET": str(dsm.socket), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    device = f"dsmt-ex-{os.getpid() % 100000}"
    pyroute2.netns.create(device)
    with pyroute2.NetNS(device) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
    try:
        dsm.start(prefix=["nsenter", f"--net=/run/netns/{device}", "--"])
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "Device.SoftwareModules.ExecutionUnit.1.AllocatedMemory = 65536" in out
        assert "Device.SoftwareModules.ExecutionUnit.1.AllocatedCPUPercent = 50" in out
        assert "Device.SoftwareModules.ExecEnv.1.ApplicationData.1.Name = db" in out
        assert "Device.SoftwareModules.ExecEnv.1.ApplicationData.1.Capacity = 16" in out
        assert "Device.SoftwareModules.ExecutionUnit.1.NetworkConfig.X_RDKCENTRAL-COM_NetworkMode = Bridged" in out
        assert "Device.SoftwareModules.ExecutionUnit.1.NetworkConfig.PortMappingRefList = " in out
        assert "TCP 8080 -> 80" in out and "10.89.0.2" in out
        log = dsm.state / "logs" / "default-1.log"
        eventually(lambda: log.exists() and "mode=demo" in log.read_text(), 20, "the EU's output")
        lines = log.read_text().splitlines()
        assert lines[:2] == ["GREETING=hello", "mode=demo"]
        assert 12000 < int(lines[2].split()[1]) <= 16384  # the volume's size in KiB, as df sees it inside
        assert value(dsm, "Device.SoftwareModules.ExecutionUnit.1.Status") == "Active"
        url = "http://10.89.0.1:8080/app.conf"  # the bridge's address: the device's only one in its namespace
        wget = ["nsenter", f"--net=/run/netns/{device}", "busybox", "wget", "-q", "-O", "-", url]
        fetched = subprocess.run(wget, capture_output=True, text=True, timeout=10, check=False)
        assert fetched.stdout == "mode=demo\n", fetched
    finally:
        if dsm.process is not None and dsm.process.poll() is None:
            for path in rows(dsm, DU):
                operate(dsm, path + "Uninstall()")
        dsm.cleanup()
        pyroute2.netns.remove(device)
