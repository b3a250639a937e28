"""Which sources the tar packager accepts, how it names them, and checksum files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import oci_config

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers.httpget import display_url
from dsm_tr181.packagers.integrity import parse_checksum_file
from dsm_tr181.packagers.tar import TarPackager
from dsm_tr181.packagers.worker import Cancel

pytestmark = pytest.mark.unit


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A minimal flat bundle archive in a directory whose name needs percent-encoding."""
    path = tmp_path / "dir with space" / "du.tar"
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


def unpack(url: str, target: Path, **credentials: str) -> BundleInfo:
    return asyncio.run(TarPackager().unpack(PackageSource(url, **credentials), target, lambda done, total: None))


@pytest.mark.parametrize("form", ["path", "file:///", "file://localhost/"])
def test_local_forms(archive: Path, tmp_path: Path, form: str) -> None:
    url = str(archive) if form == "path" else form + str(archive).lstrip("/").replace(" ", "%20")
    info = unpack(url, tmp_path / "out")
    assert info.name == "du" and (tmp_path / "out" / "rootfs").is_dir()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/nonexistent/du.tar", FaultCode.FILE_ACCESS_FAILURE),
        ("file:///nonexistent/du.tar", FaultCode.FILE_ACCESS_FAILURE),
        ("ftp://127.0.0.1/du.tar", FaultCode.UNSUPPORTED_PROTOCOL),
        ("file://otherhost/du.tar", FaultCode.UNSUPPORTED_PROTOCOL),
        ("du.tar", FaultCode.INVALID_ARGUMENTS),
        ("http://127.0.0.1:99999/du.tar", FaultCode.INVALID_ARGUMENTS),
        ("http:///du.tar", FaultCode.INVALID_ARGUMENTS),
    ],
)
def test_refused_sources(tmp_path: Path, url: str, code: FaultCode) -> None:
    with pytest.raises(Fault) as caught:
        unpack(url, tmp_path / "out")
    assert caught.value.code is code
    assert list(tmp_path.iterdir()) == []


def test_directory_and_fifo_sources_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.tar"
    os.mkfifo(fifo)
    for source in (tmp_path, fifo):
        with pytest.raises(Fault) as caught:
            unpack(str(source), tmp_path / "out")
        assert caught.value.code is FaultCode.FILE_ACCESS_FAILURE


def test_url_with_userinfo_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(Fault) as caught:
        unpack("https://admin:hunter2@127.0.0.1/du.tar", tmp_path / "out")
    assert caught.value.code is FaultCode.INVALID_ARGUMENTS
    assert "hunter2" not in str(caught.value) and "admin" not in str(caught.value)


def test_credentials_never_in_repr() -> None:
    source = PackageSource("https://h/du.tar", username="admin", password="hunter2")
    assert "hunter2" not in repr(source) and "admin" not in repr(source)


def test_display_url_hides_userinfo_and_query() -> None:
    assert display_url("https://u:p@host.example:8443/a/b.tar?sig=secret#frag") == "https://host.example:8443/a/b.tar?…"
    assert display_url("http://u:p@h:99999/x.tar") == "http://h:99999/x.tar"
    assert display_url("http://[::1]/x.tar") == "http://[::1]/x.tar"
    assert display_url("/srv/x.tar") == "/srv/x.tar"


def test_checksum_files() -> None:
    digest_a, digest_b = "a" * 64, "B" * 64
    assert parse_checksum_file(f"{digest_a}\n", "x.tar", "w") == digest_a
    assert parse_checksum_file(f"{digest_a} *build/out/other.tar\n", "x.tar", "w") == digest_a
    both = f"{digest_a}  y.tar\n{digest_b}  dir/x.tar\n"
    assert parse_checksum_file(both, "x.tar", "w") == digest_b.lower()
    with pytest.raises(Fault) as caught:
        parse_checksum_file(both, "z.tar", "w")
    assert caught.value.code is FaultCode.CORRUPT_DATA


def _bytes_read() -> int:
    """What this process has read through read(2) and friends so far (/proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_local_archive_is_read_once_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    payload = os.urandom(8 << 20)
    with tarfile.open(path, "w") as tar:
        data = json.dumps(oci_config(["/bin/true"])).encode()
        for name, content in (("config.json", data), ("rootfs/blob", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    size = path.stat().st_size
    before = _bytes_read()
    info = unpack(str(path), tmp_path / "out")
    assert _bytes_read() - before < 1.5 * size  # once, not hashed first and unpacked then
    assert info.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "out" / "rootfs" / "blob").read_bytes() == payload


def test_a_cancelled_local_unpack_stops_its_read_ahead_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps(oci_config(["/bin/true"])).encode()
        for name, content in (("config.json", data), ("rootfs/blob", os.urandom(8 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out = tmp_path / "bundles" / "out"
    out.parent.mkdir()
    cancel = Cancel()

    def progress(done: int, total: int | None) -> None:
        if done >= 4 << 20:  # read ahead past the first buffers: extraction is under way
            cancel.set()

    with pytest.raises(Fault) as caught:
        TarPackager()._unpack(PackageSource(str(path)), out, progress, cancel)
    assert caught.value.code is FaultCode.COMMAND_CANCELED
    assert list(out.parent.iterdir()) == []
    assert not [thread for thread in threading.enumerate() if thread.name == "dsm-read-ahead"]


def test_a_local_archive_that_does_not_match_its_digest_leaves_nothing(archive: Path, tmp_path: Path) -> None:
    with archive.open("ab") as file:
        file.write(b"\0" * 10240)  # more end blocks: still a valid archive, another digest
    wrong = "sha256:" + hashlib.sha256(b"another archive").hexdigest()
    out = tmp_path / "bundles" / "out"
    out.parent.mkdir()
    with pytest.raises(Fault) as caught:
        unpack(str(archive), out, digest=wrong)
    assert caught.value.code is FaultCode.CORRUPT_DATA and "expected" in caught.value.message
    assert list(out.parent.iterdir()) == []  # no bundle, no staging directory
    sibling = archive.with_name(archive.name + ".sha256")
    sibling.write_text(wrong.removeprefix("sha256:") + "  du.tar\n")
    with pytest.raises(Fault):
        unpack(str(archive), out)
    assert list(out.parent.iterdir()) == []
