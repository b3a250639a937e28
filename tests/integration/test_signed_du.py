"""Signed DUs end to end: a real daemon, its trust store served as Device.Security.Certificate
rows, archives and signatures on a real HTTPS server on 127.0.0.1, keys and certificates made
by the test (``cryptography``) and signatures made by it and by ``openssl cms``."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from dsm_tr181.control_client import DaemonError
from dsm_tr181.errors import FaultCode
from tests.integration.lcm_helpers import (
    DU,
    EE,
    INSTALL_DU,
    Outcome,
    build_du,
    eventually,
    needs_runc,
    operate,
    row,
    rows,
    set_values,
    top_entries,
    value,
)
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer, TlsFiles, make_tls_files
from tests.support.pki import DAY, NOW, Pki, issue

pytestmark = [pytest.mark.integration, needs_runc]

CERTS = "Device.Security.Certificate."
SIGNED_BY = "X_RDKCENTRAL-COM_SignedBy"
SIGNER = "CN=Test Vendor Signer,O=dsm-tr181 tests"
BAD = FaultCode.BAD_SIGNATURE.usp
VENDOR_ROOT = CERTS + "2"  # the trust store's files by name: other-root.pem, vendor-root.pem


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signed")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture(scope="module")
def tls(work: Path) -> TlsFiles:
    try:
        return make_tls_files(work / "tls")
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")


@pytest.fixture(scope="module")
def served(work: Path) -> Path:
    path = work / "served"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def https(served: Path, tls: TlsFiles) -> Iterator[FileServer]:
    with FileServer(served, tls=tls) as server:
        yield server


def trust_dir(work: Path, pki: Pki) -> Path:
    path = work / "trust"
    if not path.exists():
        pki.root.write(path, "vendor-root")
        Pki.create().root.write(path, "other-root")
        for key in path.glob("*.key"):
            key.unlink()
    return path


def start_daemon(work: Path, pki: Pki, tls: TlsFiles, *, strict: bool = False) -> DsmDaemon:
    execenvs = [
        {"name": "default", "signers": ["vendor-root"], "require_signature": strict},
        {"name": "strict", "signers": ["vendor-root"], "require_signature": True},
    ]
    dsm = DsmDaemon(
        work,
        lcm={"trust_dir": str(trust_dir(work.parent, pki))},
        execenvs=execenvs,
        extra={"packager.tar": {"ca_file": str(tls.ca_cert)}},
    )
    return dsm.start()


@pytest.fixture(scope="module")
def daemon(work: Path, pki: Pki, tls: TlsFiles) -> Iterator[DsmDaemon]:
    (work / "dsm").mkdir()
    dsm = start_daemon(work / "dsm", pki, tls)
    try:
        yield dsm
    finally:
        dsm.cleanup()


@pytest.fixture
def dsm(daemon: DsmDaemon) -> Iterator[DsmDaemon]:
    yield daemon
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")
    set_values(daemon, {EE + "1.Signers": VENDOR_ROOT})


@pytest.fixture(scope="module")
def archive(work: Path, served: Path) -> Path:
    """One DU archive, served over https too."""
    path = build_du(work / "build", "signed-app", out=served / "signed-app-1.0.0.tar")
    return path


def data_uri(signature: bytes) -> str:
    return "data:application/pkcs7-signature;base64," + base64.b64encode(signature).decode()


def install(dsm: DsmDaemon, url: str, signature: str = "", ee: str = EE + "1") -> Outcome:
    args = {"URL": url, "ExecutionEnvRef": ee}
    if signature:
        args["Signature"] = signature
    return operate(dsm, INSTALL_DU, args)


def assert_refused_leaving_nothing(dsm: DsmDaemon, outcome: Outcome, code: int, *, event: bool = True) -> None:
    assert outcome.fault is not None and outcome.fault["code"] == code, outcome
    if event:
        assert outcome.event is not None and outcome.event["CurrentState"] == "Failed", outcome
        assert int(outcome.event["Fault.FaultCode"]) == code
    else:
        assert outcome.event is None
    assert rows(dsm, DU) == []
    bundles = dsm.state / "bundles"
    assert not bundles.exists() or top_entries(bundles) == [], top_entries(bundles)


# == the trust store ====================================================================


def test_trust_store_certificates_are_served_and_signers_reference_them(dsm: DsmDaemon, pki: Pki) -> None:
    assert value(dsm, "Device.Security.CertificateNumberOfEntries") == "2"
    other, vendor = (row(dsm, path) for path in rows(dsm, CERTS))  # sorted by file name: other-root, vendor-root
    cert = pki.root.cert
    assert vendor["Subject"] == vendor["Issuer"] == "CN=Test Root CA,O=dsm-tr181 tests"
    assert vendor["SerialNumber"] == format(cert.serial_number, "X")
    assert vendor["NotBefore"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert vendor["NotAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert vendor["SignatureAlgorithm"] == "ecdsa-with-SHA256" and vendor["Enable"] == "true"
    assert other["Subject"] == "CN=Test Root CA,O=dsm-tr181 tests" and other["SerialNumber"] != vendor["SerialNumber"]
    assert value(dsm, EE + "1.Signers") == value(dsm, EE + "2.Signers") == VENDOR_ROOT


def test_a_signers_reference_to_a_missing_certificate_is_refused(dsm: DsmDaemon) -> None:
    with pytest.raises(DaemonError) as refused:
        dsm.call("set", {"values": {EE + "1.Signers": VENDOR_ROOT + "," + CERTS + "9"}})
    assert refused.value.fault is not None and refused.value.fault["code"] == FaultCode.INVALID_VALUE.usp
    assert value(dsm, EE + "1.Signers") == VENDOR_ROOT
    set_values(dsm, {EE + "1.Signers": CERTS + "1"})  # the other root alone: a vendor signature is untrusted now
    assert value(dsm, EE + "1.Signers") == CERTS + "1"


# == installs ==========================================================================


def test_a_good_signature_over_https_installs_and_the_du_names_its_signer(
    dsm: DsmDaemon, pki: Pki, archive: Path, served: Path, https: FileServer
) -> None:
    (served / "signed-app-1.0.0.tar.p7s").write_bytes(pki.sign(archive.read_bytes()))
    outcome = install(dsm, https.url(archive.name), https.url("signed-app-1.0.0.tar.p7s"))
    assert outcome.ok and outcome.event is not None and outcome.event["CurrentState"] == "Installed", outcome
    du = str(outcome.event["DeploymentUnitRef"]) + "."
    assert row(dsm, du)[SIGNED_BY] == SIGNER
    detail = dsm.call("du.detail", {"uuid": row(dsm, du)["UUID"]})
    assert detail[SIGNED_BY] == SIGNER


def test_an_openssl_cms_signature_in_a_data_uri_installs(dsm: DsmDaemon, pki: Pki, archive: Path, work: Path) -> None:
    signature = pki.openssl_sign(archive, work / "openssl")
    outcome = install(dsm, str(archive), data_uri(signature))
    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]))[SIGNED_BY] == SIGNER  # type: ignore[index]


def test_an_unsigned_du_installs_where_no_signature_is_required_and_names_no_signer(
    dsm: DsmDaemon, archive: Path
) -> None:
    outcome = install(dsm, str(archive))
    assert outcome.ok, outcome
    assert row(dsm, str(outcome.event["DeploymentUnitRef"]))[SIGNED_BY] == ""  # type: ignore[index]


BAD_SIGNATURES = {
    "tampered archive": lambda pki, data: pki.sign(data + b"tampered"),
    "untrusted key": lambda pki, data: Pki.create().sign(data),
    "expired signer": lambda pki, data: pki.sign(
        data, signer=issue("Old", pki.intermediate, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    ),
    "not yet valid signer": lambda pki, data: pki.sign(
        data, signer=issue("Early", pki.intermediate, not_before=NOW + DAY)
    ),
    "no digitalSignature key usage": lambda pki, data: pki.sign(
        data, signer=issue("Encipher", pki.intermediate, digital_signature=False)
    ),
    "server-auth only signer": lambda pki, data: pki.sign(
        data, signer=issue("Web", pki.intermediate, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    ),
    "broken chain": lambda pki, data: pki.sign(data, chain=()),
    "truncated signature": lambda pki, data: pki.sign(data)[:-20],
}


@pytest.mark.parametrize("case", list(BAD_SIGNATURES))
def test_a_bad_signature_fails_with_7036_one_event_and_leaves_nothing(
    dsm: DsmDaemon, pki: Pki, archive: Path, served: Path, https: FileServer, case: str
) -> None:
    name = hashlib.sha256(case.encode()).hexdigest()[:8] + ".p7s"
    (served / name).write_bytes(BAD_SIGNATURES[case](pki, archive.read_bytes()))
    events = dsm.events("Device.SoftwareModules.DUStateChange!")
    outcome = install(dsm, https.url(archive.name), https.url(name))
    assert_refused_leaving_nothing(dsm, outcome, BAD)
    events.du_state_change("Install")
    with pytest.raises(TimeoutError):
        events.du_state_change("Install", timeout=0.5)


def test_signers_that_do_not_trust_the_vendor_refuse_its_signature(dsm: DsmDaemon, pki: Pki, archive: Path) -> None:
    set_values(dsm, {EE + "1.Signers": CERTS + "1"})
    assert_refused_leaving_nothing(dsm, install(dsm, str(archive), data_uri(pki.sign(archive.read_bytes()))), BAD)
    set_values(dsm, {EE + "1.Signers": ""})
    assert_refused_leaving_nothing(dsm, install(dsm, str(archive), data_uri(pki.sign(archive.read_bytes()))), BAD)


def test_a_data_uri_over_the_url_bound_is_refused_before_anything_starts(
    dsm: DsmDaemon, pki: Pki, archive: Path
) -> None:
    big = pki.sign(archive.read_bytes(), chain=(pki.intermediate, pki.root, pki.intermediate))
    uri = data_uri(big)
    assert len(uri) > 2048
    assert_refused_leaving_nothing(
        dsm, install(dsm, str(archive), uri), FaultCode.INVALID_COMMAND_ARGUMENTS.usp, event=False
    )


def test_a_signature_url_with_userinfo_is_refused(dsm: DsmDaemon, archive: Path, https: FileServer) -> None:
    url = https.url("x.p7s").replace("https://", "https://user:secret@")
    outcome = install(dsm, str(archive), url)
    assert_refused_leaving_nothing(dsm, outcome, FaultCode.INVALID_ARGUMENTS.usp, event=False)
    assert "secret" not in dsm.log()


def test_an_unsigned_du_is_refused_where_signatures_are_required(dsm: DsmDaemon, archive: Path) -> None:
    events = dsm.events("Device.SoftwareModules.DUStateChange!")
    outcome = install(dsm, str(archive), ee=EE + "2")
    assert_refused_leaving_nothing(dsm, outcome, BAD)
    assert "requires signed" in outcome.fault["message"]  # type: ignore[index]
    events.du_state_change("Install")
    with pytest.raises(TimeoutError):
        events.du_state_change("Install", timeout=0.5)


# == policy turned on later; state across restarts ======================================


def test_turning_the_policy_on_keeps_unsigned_dus_but_updates_need_a_signature(
    work: Path, pki: Pki, tls: TlsFiles, archive: Path
) -> None:
    home = work / "policy"
    home.mkdir()
    dsm = start_daemon(home, pki, tls)
    try:
        first = install(dsm, str(archive))
        assert first.ok, first
        du = str(first.event["DeploymentUnitRef"]) + "."  # type: ignore[index]
        second = install(dsm, str(build_du(work / "build", "unsigned-app")))
        assert second.ok, second
        set_values(dsm, {EE + "1.Signers": CERTS + "1," + VENDOR_ROOT, CERTS + "1.Enable": False})
        dsm.stop()
        dsm = start_daemon(home, pki, tls, strict=True)
        assert row(dsm, du)["Status"] == "Installed" and row(dsm, du)[SIGNED_BY] == ""
        # what a controller set survives the restart
        assert value(dsm, EE + "1.Signers") == CERTS + "1," + VENDOR_ROOT
        assert value(dsm, CERTS + "1.Enable") == "false"
        gone = operate(dsm, str(second.event["DeploymentUnitRef"]) + ".Uninstall()")  # type: ignore[index]
        assert gone.ok, gone

        newer = build_du(work / "build", "signed-app", "2.0.0")
        refused = operate(dsm, du + "Update()", {"URL": str(newer)})
        assert refused.fault is not None and refused.fault["code"] == BAD, refused
        assert refused.event is not None and refused.event["CurrentState"] == "Installed", refused
        assert row(dsm, du)["Version"] == "1.0.0" and len(top_entries(dsm.state / "bundles" / du.split(".")[-2])) == 1

        signature = data_uri(pki.sign(newer.read_bytes()))
        set_values(dsm, {VENDOR_ROOT + ".Enable": False})  # the only trusted signer disabled: refused
        disabled = operate(dsm, du + "Update()", {"URL": str(newer), "Signature": signature})
        assert disabled.fault is not None and disabled.fault["code"] == BAD, disabled
        set_values(dsm, {VENDOR_ROOT + ".Enable": True})
        updated = operate(dsm, du + "Update()", {"URL": str(newer), "Signature": signature})
        assert updated.ok, updated
        assert row(dsm, du)["Version"] == "2.0.0" and row(dsm, du)[SIGNED_BY] == SIGNER
    finally:
        dsm.cleanup()


# == the README's worked example ============================================================

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_signing_commands() -> str:
    text = README.read_text()
    block = text.split("<!-- signing-example -->\n```sh\n", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_worked_example_signs_a_du_the_device_installs(
    work: Path, tls: TlsFiles, served: Path, https: FileServer
) -> None:
    example = work / "readme"
    example.mkdir()
    build_du(work / "build", "hello", out=example / "hello.tar")
    subprocess.run(["bash", "-euo", "pipefail", "-c", readme_signing_commands()], cwd=example, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    (served / "readme").mkdir()
    for name in ("hello.tar", "hello.tar.p7s"):
        shutil.copyfile(example / name, served / "readme" / name)
    trust = example / "signers"
    trust.mkdir()
    shutil.copyfile(example / "ca.pem", trust / "example-ca.pem")
    (example / "dsm").mkdir()
    dsm = DsmDaemon(
        example / "dsm",
        lcm={"trust_dir": str(trust)},
        execenvs=[{"name": "default", "signers": ["example-ca"]}],
        extra={"packager.tar": {"ca_file": str(tls.ca_cert)}},
    ).start()
    try:
        assert row(dsm, CERTS + "1")["Subject"] == "CN=Example Code Signing CA"
        outcome = install(dsm, https.url("readme/hello.tar"), https.url("readme/hello.tar.p7s"))
        assert outcome.ok, outcome
        assert value(dsm, str(outcome.event["DeploymentUnitRef"]) + "." + SIGNED_BY) == "CN=Example Vendor Signer"  # type: ignore[index]
    finally:
        dsm.cleanup()


def test_dsmcli_installs_with_a_signature_and_du_detail_shows_the_signer(
    dsm: DsmDaemon, pki: Pki, archive: Path, served: Path, https: FileServer
) -> None:
    (served / "cli.p7s").write_bytes(pki.sign(archive.read_bytes()))

    def dsmcli(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dsm_tr181.cli", "--socket", str(dsm.socket), "--json", *argv],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    dsmcli("du.install", "default", https.url(archive.name), "--signature", https.url("cli.p7s"), "--wait")
    (du,) = rows(dsm, DU)
    detail = json.loads(dsmcli("du.detail", row(dsm, du)["UUID"]))
    assert detail[SIGNED_BY] == SIGNER


def test_sighup_reads_the_trust_store_again(work: Path, pki: Pki, tls: TlsFiles, archive: Path) -> None:
    home = work / "reload"
    (home / "dsm").mkdir(parents=True)
    trust = home / "signers"
    pki.root.write(trust, "vendor-root")
    dsm = DsmDaemon(
        home / "dsm", lcm={"trust_dir": str(trust)}, execenvs=[{"name": "default", "signers": ["vendor-root"]}]
    ).start()
    try:
        assert value(dsm, "Device.Security.CertificateNumberOfEntries") == "1"
        late = Pki.create()
        late.root.write(trust, "late-root")
        assert dsm.process is not None
        dsm.process.send_signal(signal.SIGHUP)
        eventually(lambda: value(dsm, "Device.Security.CertificateNumberOfEntries") == "2" or None, what="reload")
        serial = format(late.root.cert.serial_number, "X")
        (added,) = [path for path in rows(dsm, CERTS) if row(dsm, path)["SerialNumber"] == serial]
        set_values(dsm, {EE + "1.Signers": CERTS + "1," + added.rstrip(".")})
        signed = install(dsm, str(archive), data_uri(late.sign(archive.read_bytes())))
        assert signed.ok and row(dsm, str(signed.event["DeploymentUnitRef"]))[SIGNED_BY] == SIGNER  # type: ignore[index]
        (trust / "late-root.pem").unlink()
        dsm.process.send_signal(signal.SIGHUP)
        eventually(lambda: value(dsm, "Device.Security.CertificateNumberOfEntries") == "1" or None, what="reload")
        assert value(dsm, EE + "1.Signers") == CERTS + "1"  # the strong reference went with its row
    finally:
        dsm.cleanup()


def test_preinstalled_dus_restored_by_reset_are_exempt_from_the_policy(
    work: Path, pki: Pki, tls: TlsFiles, archive: Path
) -> None:
    home = work / "reset"
    (home / "dsm").mkdir(parents=True)
    dsm = DsmDaemon(
        home / "dsm",
        lcm={"preinstalled": [str(archive)]},
        execenvs=[{"name": "default", "require_signature": True}],
    ).start()
    try:
        assert install(dsm, str(archive)).fault["code"] == BAD  # type: ignore[index]
        assert operate(dsm, EE + "1.Reset()").ok
        (du,) = rows(dsm, DU)
        assert row(dsm, du)["Status"] == "Installed" and row(dsm, du)[SIGNED_BY] == ""
    finally:
        dsm.cleanup()
