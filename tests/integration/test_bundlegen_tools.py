"""dsm-bundle generate against the real tools: umoci's own conversion (the starting point),
rdkcentral/BundleGen itself when installed locally, and a generated DU installed by the daemon
only on the platform and firmware it was made for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.bundlegen.baseconfig import umoci_config
from dsm_tr181.bundlegen.template import load_template
from dsm_tr181.errors import FaultCode
from dsm_tr181.sample_image import Layout, file, greeter
from tests.integration.lcm_helpers import DU, eventually, install, needs_runc, operate, rows, top_entries, value
from tests.support.daemon import DsmDaemon
from tests.unit.test_bundlegen import APP_ID, DATA, image_layout

pytestmark = pytest.mark.integration

UMOCI = shutil.which("umoci")
BUNDLEGEN = os.environ.get("DSM_BUNDLEGEN", "")


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> dict[str, Any]:
    subprocess.run([str(UMOCI), "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return json.loads((bundle / "config.json").read_text())


def image_config(layout: Path) -> dict[str, Any]:
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_text())
    return json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())


@pytest.mark.skipif(UMOCI is None, reason="needs umoci (Debian package umoci)")
@pytest.mark.parametrize(
    "config",
    [
        {"Entrypoint": ["/bin/app"], "Cmd": ["-v"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv", "User": "app",
         "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}, "/cache": {}},
         "Labels": {"tier": "edge"}, "StopSignal": "SIGINT"},
        {"Cmd": ["/bin/app"], "User": "1000:50"},
        {"Cmd": ["/bin/app"]},
    ],
    ids=["everything", "numeric-user", "minimal"],
)  # fmt: skip
def test_base_config_is_what_umoci_unpack_rootless_makes(tmp_path: Path, config: dict[str, Any]) -> None:
    layout = Layout(tmp_path / "image")
    entries = [
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        file("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"),
        file("bin/app", "x", mode=0o755),
    ]
    layout.tag(layout.image([entries], config), "1.0")

    theirs = umoci_unpack(layout.root, "1.0", tmp_path / "bundle")
    ours = umoci_config(image_config(layout.root), str(tmp_path / "bundle" / "rootfs"), "test")

    # umoci lists the Volumes in Go's map order, which is random: ours are sorted.
    volumes = [m for m in theirs["mounts"] if m["source"] == "none"]
    first = theirs["mounts"].index(volumes[0]) if volumes else 0
    theirs["mounts"][first : first + len(volumes)] = sorted(volumes, key=lambda m: m["destination"])
    assert ours == theirs


@pytest.mark.skipif(
    not BUNDLEGEN, reason="set DSM_BUNDLEGEN to a rdkcentral/BundleGen checkout (with its Python deps) to compare"
)
@pytest.mark.parametrize("runtime", ["dobby", "crun"])
def test_generated_config_matches_bundlegen(tmp_path: Path, runtime: str) -> None:
    """BundleGen and dsm-bundle on the same image and template: the same config.json, but for the
    annotations dsm-bundle adds and the capabilities' order (BundleGen lists a set)."""
    layout = image_layout(tmp_path / "image")
    metadata = DATA / "weather.json"
    if runtime == "crun":  # BundleGen --crun fails (KeyError 'rdkPlugins') on apps asking for these plugins
        app = json.loads(metadata.read_text())
        for key in ("ipc", "thunder"):
            del app[key]
        del app["resources"]["gpu"]
        metadata = tmp_path / "weather-crun.json"
        metadata.write_text(json.dumps(app))
    theirs_dir = tmp_path / "bundlegen-out"
    python = os.environ.get("DSM_BUNDLEGEN_PYTHON", sys.executable)
    command = [python, "-c", "from bundlegen.cli.main import cli; cli()",
               "generate", "-y", "-p", "testplat", "-s", str(DATA), "-a", str(metadata),
               *(["--crun"] if runtime == "crun" else []), f"oci:{layout}:1.0", str(theirs_dir)]  # fmt: skip
    subprocess.run(command, cwd=BUNDLEGEN, env={**os.environ, "PYTHONPATH": BUNDLEGEN}, check=True, timeout=300)
    theirs = json.loads(subprocess.run(["tar", "-xzOf", f"{theirs_dir}.tar.gz", "config.json"], check=True,
                                       capture_output=True).stdout)  # fmt: skip
    ours_archive = tmp_path / "ours.tar.gz"
    subprocess.run([sys.executable, "-m", "dsm_tr181.bundlegen.cli", "generate", str(layout), "--template", str(DATA),
                    "--platform", "testplat", "--api-version", "5", "--release-type", "prod", "-o", str(ours_archive),
                    "--app-metadata", str(metadata),
                    "--runtime", "dobby" if runtime == "dobby" else "crun"], check=True)  # fmt: skip
    ours = json.loads(subprocess.run(["tar", "-xzOf", str(ours_archive), "config.json"], check=True,
                                     capture_output=True).stdout)  # fmt: skip
    for config in (ours, theirs):
        config["process"]["capabilities"] = {k: sorted(v) for k, v in config["process"]["capabilities"].items()}
    added = {k for k in ours["annotations"] if k.startswith(("org.opencontainers.image.t", "org.opencontainers.image.v",
             "org.opencontainers.image.d", "com.rdkcentral.dac."))}  # fmt: skip
    added -= set(theirs["annotations"])
    ours["annotations"] = {k: v for k, v in ours["annotations"].items() if k not in added}
    assert ours == theirs


# == installing a generated DU ==============================================================


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DsmDaemon, str]]:
    key = load_template(DATA, "testplat").compatibility_key("5", "prod")
    work = tmp_path_factory.mktemp("bundlegen-dsm")
    image = {"platform_name": "testplat", "compatibility_key": key}
    dsm = DsmDaemon(work, extra={"packager.image": image})
    try:
        yield dsm.start(), key
    finally:
        dsm.cleanup()


def dsm_bundle(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dsm_tr181.bundlegen.cli", *argv], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@needs_runc
def test_a_generated_du_installs_only_on_its_platform_and_firmware(
    daemon: tuple[DsmDaemon, str], tmp_path: Path
) -> None:
    dsm, key = daemon
    layout = image_layout(tmp_path / "image")
    common = ["--template", str(DATA), "--platform", "testplat", "--release-type", "prod", "--runtime", "runc",
              "--app-metadata", str(DATA / "weather.json")]  # fmt: skip
    fitting = dsm_bundle("generate", str(layout), *common, "--api-version", "5", "-o", str(tmp_path / "ok.tar.gz"))
    assert fitting.returncode == 0, fitting.stderr
    other = dsm_bundle("generate", str(layout), *common, "--api-version", "6", "-o", str(tmp_path / "old.tar.gz"))
    assert other.returncode == 0, other.stderr

    refused = install(dsm, str(tmp_path / "old.tar.gz"))

    assert refused.fault is not None and refused.fault["cwmp_code"] == FaultCode.DU_EE_MISMATCH.cwmp, refused
    other_key = key.replace("5-", "6-", 1)
    assert f"generated for platform testplat with compatibility key {other_key}" in refused.fault["message"]
    assert f"this device is platform testplat with key {key}" in refused.fault["message"]
    assert rows(dsm, DU) == [] and top_entries(dsm.state / "bundles") == []

    outcome = install(dsm, str(tmp_path / "ok.tar.gz"))
    assert outcome.ok, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "." if outcome.event else ""
    assert (value(dsm, du + "Name"), value(dsm, du + "Version"), value(dsm, du + "Vendor")) == (
        APP_ID, "2.0.1", "example.com",
    )  # fmt: skip
    assert operate(dsm, du + "Uninstall()").ok


@needs_runc
def test_a_composed_bundle_over_a_busybox_base_runs(daemon: tuple[DsmDaemon, str], tmp_path: Path) -> None:
    dsm, _ = daemon
    greeter(Layout(tmp_path / "base"))
    app = tmp_path / "modules" / "hello"
    app.mkdir(parents=True)
    (app / "run.sh").write_text("trap 'exit 0' TERM; echo composed-and-running; sleep 3600 & wait\n")
    (app / "usr.manifest").write_text("/app/run.sh: ${MODULE_DIR}/run.sh\n")
    (app / "module.json").write_text(json.dumps({"run": {"default": {"args": ["/bin/sh", "/app/run.sh"]}}}))
    (tmp_path / "modules.json").write_text(json.dumps({"hello": {"type": "direct-dir", "path": "modules/hello"}}))
    mapping, out = str(tmp_path / "modules.json"), str(tmp_path / "hello.tar.gz")
    composed = dsm_bundle("compose", "hello", "--modules-map", mapping, "--base", str(tmp_path / "base"),
                          "--version", "0.1", "-o", out)  # fmt: skip
    assert composed.returncode == 0, composed.stderr

    outcome = install(dsm, str(tmp_path / "hello.tar.gz"))

    assert outcome.ok and outcome.event is not None, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    assert (value(dsm, du + "Name"), value(dsm, du + "Version")) == ("hello", "0.1")
    (eu,) = value(dsm, du + "ExecutionUnitList").split(",")
    assert operate(dsm, eu + ".SetRequestedState()", {"RequestedState": "Active"}).ok
    log_file = dsm.state / "logs" / f"{value(dsm, eu + '.EUID')}.log"
    eventually(lambda: log_file.exists() and "composed-and-running" in log_file.read_text(), what="composed output")
    assert operate(dsm, du + "Uninstall()").ok
