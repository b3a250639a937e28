"""Signed images end to end: a real daemon, Debian's docker-registry on 127.0.0.1 fed by skopeo,
signatures made by the test's own PKI and stored in the registry under ``sha256-<hex>.sig``
tags (through its HTTP API) or given as the ``Signature`` input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.bundlegen.ocilayout import Layout, file, layer_tar
from dsm_tr181.errors import FaultCode
from dsm_tr181.packagers.imagesignature import COSIGN_LAYER
from tests.integration.lcm_helpers import DU, EE, INSTALL_DU, Outcome, needs_runc, operate, row, rows, top_entries
from tests.support.daemon import DsmDaemon
from tests.support.pki import Pki
from tests.support.registry import REGISTRY, SKOPEO, Registry

pytestmark = [
    pytest.mark.integration,
    needs_runc,
    pytest.mark.skipif(REGISTRY is None or SKOPEO is None, reason="needs Debian's docker-registry and skopeo"),
]

SIGNED_BY = "X_RDKCENTRAL-COM_SignedBy"
SIGNER = "CN=Test Vendor Signer,O=dsm-tr181 tests"
BAD = FaultCode.BAD_SIGNATURE.usp
CMS = "application/pkcs7-signature"
DEFAULT, STRICT = EE + "1", EE + "2"  # trusts the vendor; also requires signatures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-signatures")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture(scope="module")
def registry(work: Path) -> Iterator[Registry]:
    with Registry(work / "registry") as started:
        yield started


@pytest.fixture(scope="module")
def daemon(work: Path, pki: Pki, registry: Registry) -> Iterator[DsmDaemon]:
    trust = work / "trust"
    pki.root.write(trust, "vendor-root")
    for key in trust.glob("*.key"):
        key.unlink()
    (work / "dsm").mkdir()
    dsm = DsmDaemon(
        work / "dsm",
        lcm={"trust_dir": str(trust)},
        execenvs=[
            {"name": "default", "signers": ["vendor-root"]},
            {"name": "strict", "signers": ["vendor-root"], "require_signature": True},
        ],
        extra={"packager.image": {"plain_http": [registry.host], "platform": "linux/amd64"}},
    )
    try:
        yield dsm.start()
    finally:
        dsm.cleanup()


@pytest.fixture
def dsm(daemon: DsmDaemon) -> Iterator[DsmDaemon]:
    yield daemon
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")


def push_image(work: Path, registry: Registry, name: str) -> str:
    """A one-layer image pushed as ``name`` (repo:tag); the manifest digest the registry serves."""
    layout = Layout(work / "layouts" / name.replace(":", "-").replace("/", "-"))
    layout.tag(layout.image([[file("srv/app.txt", name)]], {"Cmd": ["/bin/true"]}), "1.0")
    registry.push(layout.root, "1.0", name)
    return registry.manifest_digest(name)


def store_signature(registry: Registry, name: str, digest: str, signature: bytes) -> None:
    repository = name.rpartition(":")[0]
    registry.put_artifact(repository, digest.replace(":", "-") + ".sig", signature, CMS)


def data_uri(signature: bytes) -> str:
    return "data:application/pkcs7-signature;base64," + base64.b64encode(signature).decode()


def install(dsm: DsmDaemon, url: str, ee: str = DEFAULT, signature: str = "") -> Outcome:
    args = {"URL": url, "ExecutionEnvRef": ee, **({"Signature": signature} if signature else {})}
    return operate(dsm, INSTALL_DU, args)


def assert_refused_leaving_nothing(dsm: DsmDaemon, outcome: Outcome, words: str) -> None:
    assert outcome.fault is not None and outcome.fault["code"] == BAD, outcome
    assert words in outcome.fault["message"], outcome.fault
    assert outcome.event is not None and outcome.event["CurrentState"] == "Failed", outcome
    assert rows(dsm, DU) == []
    assert top_entries(dsm.state / "bundles") == []
    assert top_entries(dsm.state / "layers" / "layers") == []
    assert top_entries(dsm.state / "layers" / "refs") == []


def test_a_registry_stored_signature_is_verified_and_the_du_names_its_signer(
    dsm: DsmDaemon, pki: Pki, registry: Registry, work: Path
) -> None:
    digest = push_image(work, registry, "signed/app:1.0")
    store_signature(registry, "signed/app:1.0", digest, pki.sign(digest.encode()))

    outcome = install(dsm, registry.ref("signed/app:1.0"), STRICT)

    assert outcome.ok, outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."  # type: ignore[index]
    assert row(dsm, du)[SIGNED_BY] == SIGNER
    assert f"/v2/signed/app/manifests/sha256-{digest[7:]}.sig" in registry.access_log()


def test_without_a_signature_tag_an_image_installs_unsigned_unless_the_execenv_requires_one(
    dsm: DsmDaemon, registry: Registry, work: Path
) -> None:
    push_image(work, registry, "plain/app:1.0")
    outcome = install(dsm, registry.ref("plain/app:1.0"))
    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")[SIGNED_BY] == ""  # type: ignore[index]
    operate(dsm, str(outcome.event["DeploymentUnitRef"]) + ".Uninstall()")  # type: ignore[index]

    events = dsm.events("Device.SoftwareModules.DUStateChange!")
    refused = install(dsm, registry.ref("plain/app:1.0"), STRICT)
    assert_refused_leaving_nothing(dsm, refused, ".sig in the registry")
    events.du_state_change("Install")
    with pytest.raises(TimeoutError):
        events.du_state_change("Install", timeout=0.5)


WRONG = {
    "another key": lambda pki, digest: Pki.create().sign(digest.encode()),
    "another digest": lambda pki, digest: pki.sign(("sha256:" + "0" * 64).encode()),
    "not cms": lambda pki, digest: b'{"critical": {"image": {"docker-manifest-digest": "' + digest.encode() + b'"}}}',
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_registry_stored_signature_refuses_the_image_with_one_event_and_nothing_left(
    dsm: DsmDaemon, pki: Pki, registry: Registry, work: Path, case: str
) -> None:
    name = f"wrong/{case.replace(' ', '-')}:1.0"
    digest = push_image(work, registry, name)
    store_signature(registry, name, digest, WRONG[case](pki, digest))
    events = dsm.events("Device.SoftwareModules.DUStateChange!")

    outcome = install(dsm, registry.ref(name))  # a present signature must verify, required or not

    assert_refused_leaving_nothing(dsm, outcome, ".sig")
    repository = name.rpartition(":")[0]
    pulls = [line for line in registry.access_log().splitlines() if f'"GET /v2/{repository}/blobs/' in line]
    assert len(pulls) == 1, pulls  # the signature's own layer: nothing of the image was fetched
    events.du_state_change("Install")
    with pytest.raises(TimeoutError):
        events.du_state_change("Install", timeout=0.5)


def test_a_signature_input_on_an_image_is_checked_against_the_manifest_digest(
    dsm: DsmDaemon, pki: Pki, registry: Registry, work: Path
) -> None:
    digest = push_image(work, registry, "input/app:1.0")
    good = data_uri(pki.sign(digest.encode()))
    wrong = data_uri(pki.sign(("sha256:" + "1" * 64).encode()))

    assert_refused_leaving_nothing(dsm, install(dsm, registry.ref("input/app:1.0"), STRICT, wrong), "Signature input")
    outcome = install(dsm, registry.ref("input/app:1.0"), STRICT, good)

    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")[SIGNED_BY] == SIGNER  # type: ignore[index]


def test_an_openssl_signature_over_a_multi_arch_tag_covers_the_index_digest(
    dsm: DsmDaemon, pki: Pki, registry: Registry, work: Path
) -> None:
    layout = Layout(work / "layouts" / "multi")
    amd64 = layout.image([[file("srv/amd64.txt", "amd64")]], {"Cmd": ["/bin/true"]}, architecture="amd64")
    arm64 = layout.image([[file("srv/arm64.txt", "arm64")]], {"Cmd": ["/bin/true"]}, architecture="arm64")
    layout.tag(layout.index([arm64, amd64]), "1.0")
    registry.push(layout.root, "1.0", "signed/multi:1.0", all_platforms=True)
    digest = registry.manifest_digest("signed/multi:1.0")
    assert digest != amd64["digest"]  # the tag names the index
    inspect = [str(SKOPEO), "inspect", "--tls-verify=false", "--format", "{{.Digest}}"]
    shown = subprocess.run([*inspect, f"docker://{registry.host}/signed/multi:1.0"], capture_output=True, text=True)
    assert shown.stdout.strip() == digest, shown  # what README has the signer sign
    (work / "digest.txt").write_text(digest)  # printf %s "$digest" > digest.txt, as README shows
    try:
        signature = pki.openssl_sign(work / "digest.txt", work)
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")
    store_signature(registry, "signed/multi:1.0", digest, signature)

    outcome = install(dsm, registry.ref("signed/multi:1.0"), STRICT)

    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")[SIGNED_BY] == SIGNER  # type: ignore[index]


def docker_save(path: Path) -> Path:
    """A docker save archive of one layer."""
    layer = layer_tar([file("srv/app.txt", "saved")])
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest()]
    rootfs = {"type": "layers", "diff_ids": diff_ids}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": rootfs})
    members = {"config.sha.json": config.encode(), "layer0/layer.tar": layer}
    members["manifest.json"] = json.dumps([{"Config": "config.sha.json", "Layers": ["layer0/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_layout_is_signed_by_its_manifest_digest_and_a_docker_save_archive_cannot_be(
    dsm: DsmDaemon, pki: Pki, work: Path
) -> None:
    layout = Layout(work / "layouts" / "signed-layout")
    manifest = layout.image([[file("srv/app.txt", "layout")]], {"Cmd": ["/bin/true"]})
    layout.tag(manifest, "1.0")
    signed = data_uri(pki.sign(manifest["digest"].encode()))

    outcome = install(dsm, str(layout.root), STRICT, signed)

    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")[SIGNED_BY] == SIGNER  # type: ignore[index]
    operate(dsm, str(outcome.event["DeploymentUnitRef"]) + ".Uninstall()")  # type: ignore[index]
    archive = docker_save(work / "saved.tar")
    refused = install(dsm, str(archive), STRICT, data_uri(pki.sign(b"sha256:" + b"2" * 64)))
    assert_refused_leaving_nothing(dsm, refused, "docker save archive has no manifest digest")
    assert_refused_leaving_nothing(dsm, install(dsm, str(layout.root), STRICT), "no Signature given")


def test_a_cosign_format_signature_tag_counts_as_unsigned(dsm: DsmDaemon, registry: Registry, work: Path) -> None:
    """cosign's payload cannot be verified here: unsigned, so refused only where signatures are required."""
    digest = push_image(work, registry, "cosigned/app:1.0")
    payload = b'{"critical": {"image": {"docker-manifest-digest": "' + digest.encode() + b'"}}}'
    registry.put_artifact("cosigned/app", digest.replace(":", "-") + ".sig", payload, COSIGN_LAYER)

    assert_refused_leaving_nothing(dsm, install(dsm, registry.ref("cosigned/app:1.0"), STRICT), "cosign signature")
    outcome = install(dsm, registry.ref("cosigned/app:1.0"))
    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]) + ".")[SIGNED_BY] == ""  # type: ignore[index]
    assert "holds a cosign signature, not a CMS one: installed as unsigned" in dsm.log()
