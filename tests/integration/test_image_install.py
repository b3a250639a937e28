"""InstallDU of OCI images end to end: the real ``dsm`` daemon, a real registry (Debian's
``docker-registry``, HTTP and HTTPS with basic auth, fed by ``skopeo``), images built here
(layers as tar files, whiteouts, opaque directories, a multi-arch index), started with runc.

One daemon and three registries serve the module; every test leaves no DU behind, and
checks that a failure leaves no bundle, no layer and no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dsm_tools.sample_image import busybox_layer, greeter

from dsm_tr181.bundlegen.ocilayout import Entry, Layout, file, layer_tar
from dsm_tr181.cli import size
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig
from tests.integration.lcm_helpers import (
    DU,
    EE1,
    INSTALL_DU,
    Outcome,
    eu_of,
    eventually,
    install,
    needs_runc,
    operate,
    operate_async,
    row,
    rows,
    runc_state,
    top_entries,
    value,
    wait_status,
)
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer, TlsFiles, make_tls_files
from tests.support.registry import REGISTRY, SKOPEO, Registry

pytestmark = [
    pytest.mark.integration,
    needs_runc,
    pytest.mark.skipif(REGISTRY is None or SKOPEO is None, reason="needs Debian's docker-registry and skopeo"),
]

USER, PASSWORD = "dsm-image-puller", "Pw-4kq9-registry-secret"
SERVICE = "trap 'exit 0' TERM; echo {greeting}; sleep 3600 & wait"


@dataclass
class Registries:
    plain: Registry  # http, no auth
    secure: Registry  # https with the test CA, htpasswd basic auth
    fake: FileServer  # static files laid out as /v2/..., for redirect loops
    slow: FileServer  # the same files, sent too slowly (a stalled server)
    fake_root: Path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-e2e")


@pytest.fixture(scope="module")
def tls(work: Path) -> TlsFiles:
    return make_tls_files(work / "tls")


@pytest.fixture(scope="module")
def registries(work: Path, tls: TlsFiles) -> Iterator[Registries]:
    fake_root = work / "fake"
    fake_root.mkdir()
    with (
        Registry(work / "plain") as plain,
        Registry(work / "secure", tls=tls, auth=(USER, PASSWORD)) as secure,
        FileServer(fake_root) as fake,
        FileServer(fake_root) as slow,
    ):
        slow.chunk_delay = 5.0  # beyond the daemon's read_timeout
        yield Registries(plain, secure, fake, slow, fake_root)


@pytest.fixture(scope="module")
def daemon(work: Path, tls: TlsFiles, registries: Registries) -> Iterator[DsmDaemon]:
    (work / "dsm").mkdir()
    hosts = [registries.plain.host, f"127.0.0.1:{registries.fake.port}", f"127.0.0.1:{registries.slow.port}"]
    image = {"plain_http": hosts, "ca_file": str(tls.ca_cert), "read_timeout": 2.0, "platform": "linux/amd64"}
    dsm = DsmDaemon(work / "dsm", extra={"packager.image": image})
    try:
        yield dsm.start()
    finally:
        dsm.cleanup()


@pytest.fixture
def dsm(daemon: DsmDaemon) -> Iterator[DsmDaemon]:
    yield daemon
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")


@pytest.fixture
def images(work: Path, request: pytest.FixtureRequest) -> Path:
    path = work / "images" / request.node.name
    path.mkdir(parents=True)
    return path


def installed(outcome: Outcome) -> str:
    assert outcome.ok, outcome
    assert outcome.event is not None and outcome.event["CurrentState"] == "Installed", outcome.event
    return str(outcome.event["DeploymentUnitRef"]) + "."


def start(dsm: DsmDaemon, eu: str) -> None:
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")


def output_of(dsm: DsmDaemon, eu: str, text: str) -> None:
    log_file = dsm.state / "logs" / f"{value(dsm, eu + 'EUID')}.log"
    eventually(lambda: log_file.exists() and text in log_file.read_text(), what=f"{text!r} from {eu}")


def bundle(dsm: DsmDaemon, du: str) -> Path:
    """The bundle directory of an installed DU."""
    (generation,) = top_entries(dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2])
    return dsm.state / "bundles" / du.rstrip(".").rpartition(".")[2] / generation


def stored_layers(dsm: DsmDaemon) -> list[str]:
    return sorted(name for name in top_entries(dsm.state / "layers" / "layers") if not name.endswith(".json"))


def assert_nothing_left(dsm: DsmDaemon, outcome: Outcome, code: FaultCode, words: str) -> None:
    assert outcome.fault is not None, outcome
    assert (outcome.fault["code"], outcome.fault["cwmp_code"]) == (code.usp, code.cwmp), outcome.fault
    assert words in outcome.fault["message"], outcome.fault
    assert rows(dsm, DU) == []
    assert top_entries(dsm.state / "bundles") == []
    assert stored_layers(dsm) == []
    assert top_entries(dsm.state / "layers" / "refs") == []


def service_image(layout: Layout, greeting: str, base: Any = None, **annotations: str) -> dict[str, Any]:
    layers = [base or busybox_layer(), [file(f"srv/{greeting}.txt", greeting)]]
    config = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": [SERVICE.format(greeting=greeting)], "Env": ["PATH=/bin"]}
    return layout.image(layers, config, annotations=annotations or None)


# == installs from a registry ==========================================================


def test_registry_install_takes_metadata_from_annotations_reports_progress_and_runs(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "app")
    notes = {
        "org.opencontainers.image.title": "weather",
        "org.opencontainers.image.version": "2.4.1",
        "org.opencontainers.image.vendor": "acme",
        "org.opencontainers.image.description": "weather station",
    }
    manifest = service_image(layout, "hello-from-the-registry", **notes)
    layout.tag(manifest, "1.0")
    registries.plain.push(layout.root, "1.0", "app:1.0")
    steps: list[dict[str, Any]] = []
    args = {"URL": registries.plain.ref("app:1.0"), "ExecutionEnvRef": EE1}

    result = dsm.client().follow("operate", {"command": INSTALL_DU, "args": args}, steps.append)

    du = str(result["DUStateChange"]["DeploymentUnitRef"]) + "."
    details = row(dsm, du)
    assert (details["Name"], details["Version"], details["Vendor"], details["Description"]) == (
        "weather", "2.4.1", "acme", "weather station",
    )  # fmt: skip
    assert details["URL"] == registries.plain.ref("app:1.0")
    layer_bytes = sum(layer["size"] for layer in json.loads(blob(layout, manifest))["layers"])
    downloads = [s for s in steps if s.get("kind") == "stage" and s.get("stage") == "download" and s.get("total")]
    assert downloads[-1]["done"] == downloads[-1]["total"] == layer_bytes
    spec = json.loads((bundle(dsm, du) / "config.json").read_text())
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert not any(m["type"] == "bind" for m in spec["mounts"])
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "hello-from-the-registry")
    assert len(stored_layers(dsm)) == 2
    assert ".sig" not in registries.plain.access_log()  # no Signers, no policy: no signature looked up

    assert operate(dsm, du + "Uninstall()").ok
    assert top_entries(dsm.state / "bundles") == [] and stored_layers(dsm) == []


def blob(layout: Layout, descriptor: dict[str, Any]) -> bytes:
    return (layout.root / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()


def test_https_registry_with_basic_auth_needs_the_credentials(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "app")
    greeter(layout, "hello-over-tls")
    registries.secure.push(layout.root, "1.0", "secure/app:1.0")
    url = registries.secure.ref("secure/app:1.0")

    anonymous = install(dsm, url)
    assert_nothing_left(dsm, anonymous, FaultCode.TRANSFER_AUTH_FAILURE, "no Username/Password")
    wrong = install(dsm, url, Username=USER, Password="not-" + PASSWORD)
    assert_nothing_left(dsm, wrong, FaultCode.TRANSFER_AUTH_FAILURE, "refused the credentials")

    untrusting = ImagePackager(ImagePackagerConfig(), images / "layers")  # the system CAs only
    (images / "bundles").mkdir()
    with pytest.raises(Fault) as raised:
        asyncio.run(untrusting.unpack(PackageSource(url, USER, PASSWORD), images / "bundles" / "g", lambda *_: None))
    assert raised.value.code is FaultCode.SERVER_INSECURE and "certificate not trusted" in raised.value.message

    du = installed(install(dsm, url, Username=USER, Password=PASSWORD))
    assert value(dsm, du + "Name") == "greeter"
    assert PASSWORD not in dsm.log()
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "hello-over-tls")


def test_multi_arch_index_resolves_to_the_device_platform(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "multi")
    config = {"Cmd": ["/bin/sh", "-c", SERVICE.format(greeting="i-am-amd64")]}
    amd64 = layout.image([busybox_layer()], config, architecture="amd64")
    arm64 = layout.image([[file("bin/sh", "not this one")]], {"Cmd": ["/bin/sh"]}, architecture="arm64", variant="v8")
    armv7 = layout.image([[file("bin/sh", "nor this")]], {"Cmd": ["/bin/sh"]}, architecture="arm", variant="v7")
    layout.tag(layout.index([arm64, amd64, armv7]), "1.0")
    layout.tag(layout.index([arm64, armv7]), "no-amd64")
    registries.plain.push(layout.root, "1.0", "multi:1.0", all_platforms=True)
    registries.plain.push(layout.root, "no-amd64", "multi:no-amd64", all_platforms=True)

    du = installed(install(dsm, registries.plain.ref("multi:1.0")))
    assert value(dsm, du + "Version") == "1.0"  # no version annotation: the tag
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "i-am-amd64")
    assert operate(dsm, du + "Uninstall()").ok

    mismatch = install(dsm, registries.plain.ref("multi:no-amd64"))
    assert_nothing_left(dsm, mismatch, FaultCode.DU_EE_MISMATCH, "offered: linux/arm64/v8, linux/arm/v7")


def test_install_by_digest_checks_the_manifest(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "app")
    manifest = greeter(layout, "by-digest")
    registries.plain.push(layout.root, "1.0", "pinned:1.0")

    du = installed(install(dsm, registries.plain.ref(f"pinned@{manifest['digest']}")))
    assert value(dsm, du + "Name") == "greeter"


# == faults: the right code, nothing left ================================================


def test_missing_tag_is_a_file_access_failure(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "app")
    greeter(layout)
    registries.plain.push(layout.root, "1.0", "known:1.0")

    outcome = install(dsm, registries.plain.ref("known:9.9"))

    assert_nothing_left(dsm, outcome, FaultCode.FILE_ACCESS_FAILURE, "HTTP 404")


def test_layer_with_a_wrong_digest_is_corrupt_data(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "app")
    manifest = service_image(layout, "tampered")
    layout.tag(manifest, "1.0")
    registries.plain.push(layout.root, "1.0", "tampered:1.0")
    top = json.loads(blob(layout, manifest))["layers"][-1]
    data = registries.plain.blob_data(top["digest"].removeprefix("sha256:"))
    original = data.read_bytes()
    data.write_bytes(layer_gzip([file("srv/evil.txt", "x" * 10)], len(original)))

    outcome = install(dsm, registries.plain.ref("tampered:1.0"))

    assert_nothing_left(dsm, outcome, FaultCode.CORRUPT_DATA, f"layer {top['digest']}: sha256 is")


def layer_gzip(entries: list[Entry], size: int) -> bytes:
    """A gzip layer padded to ``size`` bytes (the registry serves the size it recorded)."""
    import gzip

    data = gzip.compress(layer_tar(entries), mtime=0)
    assert len(data) <= size
    return data + b"\0" * (size - len(data))


def fake_registry(root: Path, layout: Layout, manifest: dict[str, Any], repository: str) -> str:
    """Lay ``manifest`` and its blobs out as a registry's /v2/ paths; the first layer's blob path."""
    base = root / "v2" / repository
    (base / "manifests").mkdir(parents=True)
    (base / "blobs").mkdir()
    (base / "manifests" / "1.0").write_bytes(blob(layout, manifest))
    for path in (layout.root / "blobs" / "sha256").iterdir():
        shutil.copy(path, base / "blobs" / f"sha256:{path.name}")
    first = json.loads(blob(layout, manifest))["layers"][0]["digest"]
    return f"/v2/{repository}/blobs/{first}"


def test_redirect_loop_fails_and_leaves_nothing(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "app")
    layer_path = fake_registry(registries.fake_root, layout, greeter(layout), "loop")
    registries.fake.redirects[layer_path] = layer_path

    outcome = install(dsm, f"oci://127.0.0.1:{registries.fake.port}/loop:1.0")

    assert_nothing_left(dsm, outcome, FaultCode.FILE_ACCESS_FAILURE, "redirect loop")


def test_stalled_blob_server_fails_and_leaves_nothing(dsm: DsmDaemon, registries: Registries, images: Path) -> None:
    layout = Layout(images / "app")
    layer_path = fake_registry(registries.fake_root, layout, greeter(layout), "stall")
    # The blob is redirected to a storage host that stops sending (as registries redirect to S3).
    registries.fake.redirects[layer_path] = f"http://127.0.0.1:{registries.slow.port}{layer_path}"

    outcome = install(dsm, f"oci://127.0.0.1:{registries.fake.port}/stall:1.0")

    assert_nothing_left(dsm, outcome, FaultCode.DOWNLOAD_INCOMPLETE, "stalled")


def test_a_crash_during_a_layer_download_leaves_nothing_after_the_restart(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "app")
    layer_path = fake_registry(registries.fake_root, layout, greeter(layout), "crash")
    registries.fake.redirects[layer_path] = f"http://127.0.0.1:{registries.slow.port}{layer_path}"
    operate_async(dsm, INSTALL_DU, {"URL": f"oci://127.0.0.1:{registries.fake.port}/crash:1.0", "ExecutionEnvRef": EE1})
    eventually(lambda: any(r.path == layer_path for r in registries.slow.requests), what="the layer download")

    dsm.kill9()  # while the layer is being extracted into the store's staging directory
    dsm.start()

    assert rows(dsm, DU) == []
    assert top_entries(dsm.state / "bundles") == []
    assert top_entries(dsm.state / "layers" / "layers") == []  # no layer, no staging directory
    assert top_entries(dsm.state / "layers" / "refs") == []


# == layer sharing =========================================================================


def test_layers_are_shared_between_dus_and_freed_with_the_last(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "two")
    base = layout.layer(busybox_layer())
    first = service_image(layout, "first-app", base=base)
    second = service_image(layout, "second-app", base=base)
    layout.tag(first, "first")
    layout.tag(second, "second")
    registries.plain.push(layout.root, "first", "shared/first:1.0")
    registries.plain.push(layout.root, "second", "shared/second:1.0")
    base_digest = base[0]["digest"]

    du1 = installed(install(dsm, registries.plain.ref("shared/first:1.0")))
    alone = int(value(dsm, eu_of(dsm, du1) + "DiskSpaceInUse"))
    du2 = installed(install(dsm, registries.plain.ref("shared/second:1.0")))

    pulls = [line for line in registries.plain.access_log().splitlines() if '"GET /v2/shared/' in line]
    assert sum(f"/blobs/{base_digest}" in line for line in pulls) == 1, "the base layer was downloaded twice"
    assert len(stored_layers(dsm)) == 3
    busybox1, busybox2 = (os.stat(bundle(dsm, du) / "rootfs/bin/busybox") for du in (du1, du2))
    assert busybox1.st_ino == busybox2.st_ino  # one copy on disk
    shared = int(value(dsm, eu_of(dsm, du2) + "DiskSpaceInUse"))
    assert shared < alone * 0.6, (alone, shared)  # half of the busybox layer, not all of it
    eu2 = eu_of(dsm, du2)
    start(dsm, eu2)

    assert operate(dsm, du1 + "Uninstall()").ok

    assert len(stored_layers(dsm)) == 2 and base_digest.removeprefix("sha256:") in stored_layers(dsm)
    state = runc_state(dsm, value(dsm, eu2 + "EUID"))
    assert state is not None and state["status"] == "running"
    assert operate(dsm, eu2 + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    wait_status(dsm, eu2, "Idle")
    start(dsm, eu2)  # its root filesystem is whole without the other DU
    output_of(dsm, eu2, "second-app")
    assert operate(dsm, du2 + "Uninstall()").ok
    assert stored_layers(dsm) == []


def test_disk_space_in_use_follows_later_sharing_and_dsmcli_shows_each_layer(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "pair")
    base = layout.layer(busybox_layer())
    first, second = (service_image(layout, name, base=base) for name in ("first-pair", "second-pair"))
    layout.tag(first, "first")
    layout.tag(second, "second")
    registries.plain.push(layout.root, "first", "pair/first:1.0")
    registries.plain.push(layout.root, "second", "pair/second:1.0")
    du1 = installed(install(dsm, registries.plain.ref("pair/first:1.0")))
    eu1 = eu_of(dsm, du1)
    alone = int(value(dsm, eu1 + "DiskSpaceInUse"))

    env = {**os.environ, "DSM_SOCKET": str(dsm.socket)}
    argv = [sys.executable, "-m", "dsm_tr181.cli", "du.install", "default", registries.plain.ref("pair/second:1.0")]
    waited = subprocess.run([*argv, "--wait"], env=env, capture_output=True, text=True, timeout=60, check=False)

    assert waited.returncode == 0, waited.stderr
    base_layer, own_layer = json.loads(blob(layout, second))["layers"]
    shown = waited.stderr.splitlines()
    assert f"layer 1/2 {base_layer['digest'][:19]}: already stored ({size(base_layer['size'])})" in shown, shown
    own = size(own_layer["size"])
    assert f"layer 2/2 {own_layer['digest'][:19]}: {own} of {own}" in shown, shown
    (du2,) = (du for du in rows(dsm, DU) if du != du1)
    base_file = dsm.state / "layers/layers" / (base_layer["digest"].removeprefix("sha256:") + ".json")
    half_base_kib = json.loads(base_file.read_text())["bytes"] / 2 / 1024
    shared = int(value(dsm, eu1 + "DiskSpaceInUse"))
    assert abs(alone - shared - half_base_kib) <= 2, (alone, shared, half_base_kib)  # the other half is DU 2's
    assert abs(int(value(dsm, eu_of(dsm, du2) + "DiskSpaceInUse")) - shared) <= 8  # same base, tiny own layers

    assert operate(dsm, du2 + "Uninstall()").ok

    assert int(value(dsm, eu1 + "DiskSpaceInUse")) == alone
    du2 = installed(install(dsm, registries.plain.ref("pair/second:1.0")))
    assert int(value(dsm, eu1 + "DiskSpaceInUse")) == shared
    other_base = [*busybox_layer(), file("etc/other-base", "not the same base")]
    layout.tag(service_image(layout, "second-pair", base=other_base), "second-2")
    registries.plain.push(layout.root, "second-2", "pair/second:2.0")
    assert operate(dsm, du2 + "Update()", {"URL": registries.plain.ref("pair/second:2.0")}).ok
    assert int(value(dsm, eu1 + "DiskSpaceInUse")) == alone  # the update left the shared base


# == image archives ==========================================================================


def whiteout_layers() -> list[list[Entry]]:
    lower = [
        *busybox_layer(),
        file("data/a", "a"), file("data/b", "b"), file("etc/gone", "x"),
        Entry("keep", kind="dir", mode=0o755), file("keep/inner", "i"),
    ]  # fmt: skip
    upper = [
        file("data/.wh..wh..opq", ""), file("data/c", "c"), file("etc/.wh.gone", ""),
        file("keep", "now a file"),
    ]  # fmt: skip
    return [lower, upper]


def check_whiteouts(rootfs: Path) -> None:
    assert sorted(os.listdir(rootfs / "data")) == ["c"]
    assert not (rootfs / "etc" / "gone").exists()
    assert (rootfs / "keep").read_text() == "now a file"
    assert not [p for p in rootfs.rglob(".wh.*")]


def test_oci_layout_tar_with_whiteouts_installs_from_a_file_url(dsm: DsmDaemon, images: Path) -> None:
    layout = Layout(images / "layout")
    config = {"Cmd": ["/bin/sh", "-c", SERVICE.format(greeting="from-a-layout-tar")], "User": "app:staff"}
    layout.tag(layout.image(whiteout_layers(), config), "1.0")
    archive = images / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for child in sorted(layout.root.iterdir()):
            tar.add(child, arcname=child.name)

    du = installed(install(dsm, archive.as_uri()))

    rootfs = bundle(dsm, du) / "rootfs"
    check_whiteouts(rootfs)
    spec = json.loads((bundle(dsm, du) / "config.json").read_text())
    assert spec["process"]["user"] == {"uid": 1000, "gid": 50}
    assert value(dsm, du + "Name") == "image"  # no title: the archive's name


def test_docker_save_archive_installs_and_runs(dsm: DsmDaemon, images: Path) -> None:
    archive = images / "saved.tar"
    layers = [layer_tar(entries) for entries in whiteout_layers()]
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", SERVICE.format(greeting="from-docker-save")],
                   "Labels": {"org.opencontainers.image.vendor": "docker-vendor"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]},
    }  # fmt: skip
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    members = {config_name: config_bytes}
    members |= {f"layer{n}/layer.tar": layer for n, layer in enumerate(layers)}
    manifest = [{"Config": config_name, "RepoTags": ["example.com/saved-app:3.1"], "Layers": list(members)[1:]}]
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    du = installed(install(dsm, str(archive)))

    assert (value(dsm, du + "Name"), value(dsm, du + "Version"), value(dsm, du + "Vendor")) == (
        "saved-app", "3.1", "docker-vendor",
    )  # fmt: skip
    check_whiteouts(bundle(dsm, du) / "rootfs")
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "from-docker-save")


def test_image_archives_over_http_are_told_apart_from_du_archives(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    layout = Layout(images / "layout")
    config = {"Cmd": ["/bin/sh", "-c", SERVICE.format(greeting="from-an-http-archive")]}
    layout.tag(layout.image(whiteout_layers(), config, annotations={"org.opencontainers.image.title": "web"}), "1.0")
    archive = registries.fake_root / "served-image.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout.root, arcname=".")
    url = f"http://127.0.0.1:{registries.fake.port}/served-image.tar"

    du = installed(install(dsm, url))

    assert value(dsm, du + "Name") == "web"
    check_whiteouts(bundle(dsm, du) / "rootfs")
    assert list((dsm.state / "layers").glob("tmp*")) == []  # the download went with its install
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "from-an-http-archive")


# == the README example =======================================================================


def dsmcli_on_a_terminal(dsm: DsmDaemon, *argv: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run dsmcli with its stderr on a pseudo-terminal (where --wait shows live progress); (result, terminal text)."""
    env = {**os.environ, "DSM_SOCKET": str(dsm.socket)}
    controller, terminal = pty.openpty()
    with os.fdopen(controller, "rb", buffering=0) as screen:
        done = subprocess.run([sys.executable, "-m", "dsm_tr181.cli", *argv], env=env, stdout=subprocess.PIPE,
                              stderr=terminal, text=True, timeout=60, check=False)  # fmt: skip
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written has been read
            while chunk := screen.read(65536):
                shown += chunk
    return done, shown.decode(errors="replace")


def test_readme_example_sample_image_pushed_and_installed_with_dsmcli(
    dsm: DsmDaemon, registries: Registries, images: Path
) -> None:
    subprocess.run([sys.executable, "-m", "dsm_tools.sample_image", str(images / "greeter")], check=True, timeout=60)
    registries.plain.push(images / "greeter", "1.0", "greeter:1.0")

    done, terminal = dsmcli_on_a_terminal(dsm, "du.install", "default", registries.plain.ref("greeter:1.0"), "--wait")

    assert done.returncode == 0, terminal
    layer_bytes = sum(p.stat().st_size for p in (images / "greeter/blobs/sha256").iterdir()) - sum(
        len(blob_text) for blob_text in small_blobs(images / "greeter")
    )
    assert f"download: {size(layer_bytes)} of {size(layer_bytes)} (100%)" in terminal, terminal
    assert "DUStateChange.CurrentState = Installed" in done.stdout
    (du,) = rows(dsm, DU)
    assert operate(dsm, du + "Uninstall()").ok
    from_layout, terminal = dsmcli_on_a_terminal(dsm, "du.install", "default", str(images / "greeter"), "--wait")
    assert "DUStateChange.CurrentState = Installed" in from_layout.stdout, terminal
    (du,) = rows(dsm, DU)
    eu = eu_of(dsm, du)
    start(dsm, eu)
    output_of(dsm, eu, "hello from an image")


def small_blobs(layout: Path) -> list[bytes]:
    """The JSON blobs (manifest, config) of a layout: not layers."""
    blobs = [p.read_bytes() for p in (layout / "blobs/sha256").iterdir()]
    return [data for data in blobs if data.startswith(b"{")]
