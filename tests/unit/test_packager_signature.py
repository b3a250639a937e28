"""The tar packager with a Signature: where it comes from, what it costs, and that it is checked
before anything is unpacked. Real keys, real archives, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from dsm_tools.sample_bundle import oci_config

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers.tar import TarPackager, TarPackagerConfig
from tests.support.httpserver import FileServer
from tests.support.pki import Pki

pytestmark = pytest.mark.unit

SIGNER = "CN=Test Vendor Signer,O=dsm-tr181 tests"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "du.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        data = json.dumps(oci_config(["/bin/true"])).encode()
        info = tarfile.TarInfo("config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        rootfs = tarfile.TarInfo("rootfs")
        rootfs.type = tarfile.DIRTYPE
        tar.addfile(rootfs)
    return path


@pytest.fixture
def server(archive: Path) -> Iterator[FileServer]:
    with FileServer(archive.parent) as running:
        yield running


def unpack(source: PackageSource, target: Path, config: TarPackagerConfig | None = None) -> BundleInfo:
    return asyncio.run(TarPackager(config).unpack(source, target, lambda done, total: None))


def fails(source: PackageSource, target: Path, config: TarPackagerConfig | None = None) -> Fault:
    with pytest.raises(Fault) as caught:
        unpack(source, target, config)
    assert not target.exists() and [p.name for p in target.parent.iterdir() if p.name != "served"] == []
    return caught.value


def data_uri(signature: bytes, *, base64_form: bool = True) -> str:
    if base64_form:
        return "data:application/pkcs7-signature;base64," + base64.b64encode(signature).decode()
    return "data:application/pkcs7-signature," + urllib.parse.quote_from_bytes(signature)


@pytest.mark.parametrize("base64_form", [True, False])
def test_data_uri_signatures_in_both_encodings(pki: Pki, archive: Path, tmp_path: Path, base64_form: bool) -> None:
    signature = data_uri(pki.sign(archive.read_bytes()), base64_form=base64_form)
    info = unpack(PackageSource(str(archive), signature=signature, signers=(pki.root.der,)), tmp_path / "out")
    assert info.signed_by == SIGNER and (tmp_path / "out" / "config.json").is_file()


def test_a_signature_naming_sha512_is_checked_against_a_sha512_taken_while_streaming(
    pki: Pki, archive: Path, server: FileServer, tmp_path: Path
) -> None:
    (archive.parent / "du.tar.p7s").write_bytes(pki.sign(archive.read_bytes(), algorithm=hashes.SHA512()))
    source = PackageSource(server.url("du.tar"), signature=server.url("du.tar.p7s"), signers=(pki.root.der,))
    info = unpack(source, tmp_path / "out")
    assert info.signed_by == SIGNER and info.digest.startswith("sha256:")


def test_the_signature_is_checked_before_anything_is_unpacked(pki: Pki, archive: Path, tmp_path: Path) -> None:
    # A corrupt archive (7035 once extraction starts) with a signature over other bytes: 7036 wins.
    archive.write_bytes(b"not a tar archive" * 100)
    signature = data_uri(pki.sign(b"the genuine archive"))
    fault = fails(PackageSource(str(archive), signature=signature, signers=(pki.root.der,)), tmp_path / "out")
    assert fault.code is FaultCode.BAD_SIGNATURE


def test_credentials_go_only_to_the_archive_s_own_origin(
    pki: Pki, archive: Path, server: FileServer, tmp_path: Path
) -> None:
    (archive.parent / "du.tar.p7s").write_bytes(pki.sign(archive.read_bytes()))
    server.auth = ("user", "secret")
    same = PackageSource(
        server.url("du.tar"), "user", "secret", signature=server.url("du.tar.p7s"), signers=(pki.root.der,)
    )
    assert unpack(same, tmp_path / "same").signed_by == SIGNER
    assert all(r.authorization for r in server.requests)
    with FileServer(archive.parent) as other:
        other.auth = ("user", "secret")
        elsewhere = PackageSource(
            server.url("du.tar"), "user", "secret", signature=other.url("du.tar.p7s"), signers=(pki.root.der,)
        )
        (tmp_path / "second").mkdir()
        fault = fails(elsewhere, tmp_path / "second" / "elsewhere")
        assert fault.code is FaultCode.TRANSFER_AUTH_FAILURE
        assert [r.authorization for r in other.requests] == [""]


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        ("data:application/pkcs7-signature;base64,!!!", FaultCode.BAD_SIGNATURE),
        ("data:no-comma", FaultCode.BAD_SIGNATURE),
        ("data:,", FaultCode.BAD_SIGNATURE),
        ("ftp://127.0.0.1/du.tar.p7s", FaultCode.UNSUPPORTED_PROTOCOL),
        ("/nonexistent/du.tar.p7s", FaultCode.FILE_ACCESS_FAILURE),
    ],
)
def test_unusable_signature_sources_fail(
    pki: Pki, archive: Path, tmp_path: Path, signature: str, code: FaultCode
) -> None:
    fault = fails(PackageSource(str(archive), signature=signature, signers=(pki.root.der,)), tmp_path / "out")
    assert fault.code is code, fault


def test_a_signature_over_max_signature_bytes_is_refused(
    pki: Pki, archive: Path, server: FileServer, tmp_path: Path
) -> None:
    (archive.parent / "du.tar.p7s").write_bytes(pki.sign(archive.read_bytes()))
    source = PackageSource(server.url("du.tar"), signature=server.url("du.tar.p7s"), signers=(pki.root.der,))
    fault = fails(source, tmp_path / "out", TarPackagerConfig(max_signature_bytes=100))
    assert fault.code is FaultCode.BAD_SIGNATURE and "larger than 100 bytes" in fault.message
    assert [r.path for r in server.requests] == ["/du.tar.p7s"]  # the archive was never asked for
