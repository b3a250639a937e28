"""The tar packager fetching over real HTTP and HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import socket
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers.tar import TarPackager, TarPackagerConfig
from dsm_tr181.sample_bundle import make_archive, make_bundle
from tests.support.httpserver import FileServer, TlsFiles, free_port, make_tls_files

pytestmark = pytest.mark.integration

USER, PASSWORD = "operator", "s3cr3t-Pa55"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Archives the servers hand out: hello.tar.gz (a bundle) and slow.tar (1 MiB of noise in a bundle)."""
    root = tmp_path_factory.mktemp("served")
    work = tmp_path_factory.mktemp("work")
    binary = work / "fake-busybox"
    binary.write_bytes(b"\x7fELF" + bytes(4096))
    make_archive(make_bundle(work / "hello", busybox=binary), root / "hello.tar.gz")
    noisy = make_bundle(work / "noisy", busybox=binary)
    (noisy / "rootfs" / "noise").write_bytes(os.urandom(1 << 20))
    make_archive(noisy, root / "slow.tar")
    return root


@pytest.fixture
def http(served: Path) -> Iterator[FileServer]:
    with FileServer(served) as server:
        yield server


@pytest.fixture
def https(served: Path, tls: TlsFiles) -> Iterator[FileServer]:
    with FileServer(served, tls=tls) as server:
        yield server


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


def unpack(
    url: str,
    bundles: Path,
    progress: list[tuple[int, int | None]] | None = None,
    *,
    username: str = "",
    password: str = "",
    digest: str = "",
    **config: Any,
) -> BundleInfo:
    packager = TarPackager(TarPackagerConfig(**config))
    seen = progress if progress is not None else []
    source = PackageSource(url, username=username, password=password, digest=digest)
    return asyncio.run(packager.unpack(source, bundles / "du", lambda done, total: seen.append((done, total))))


def refused(code: FaultCode, url: str, bundles: Path, **kwargs: Any) -> Fault:
    with pytest.raises(Fault) as caught:
        unpack(url, bundles, **kwargs)
    assert caught.value.code is code, caught.value
    assert list(bundles.iterdir()) == [], "something was left behind"
    return caught.value


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_http_download_reports_progress(http: FileServer, served: Path, bundles: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    info = unpack(http.url("slow.tar"), bundles, progress)
    size = (served / "slow.tar").stat().st_size
    assert (info.name, info.digest) == ("noisy", f"sha256:{sha256_of(served / 'slow.tar')}")
    assert progress[0] == (0, size) and progress[-1] == (size, size)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert len(progress) > 3
    assert [r.path for r in http.requests] == ["/slow.tar.sha256", "/slow.tar"]
    assert sorted(p.name for p in bundles.iterdir()) == ["du"]


def test_https_with_the_configured_ca(https: FileServer, bundles: Path, tls: TlsFiles) -> None:
    assert unpack(https.url("hello.tar.gz"), bundles, ca_file=tls.ca_cert).name == "hello"


def test_https_without_the_ca_is_insecure(https: FileServer, bundles: Path) -> None:
    fault = refused(FaultCode.SERVER_INSECURE, https.url("hello.tar.gz"), bundles)
    assert https.url("hello.tar.gz") in fault.message


def test_https_verification_can_be_turned_off(https: FileServer, bundles: Path) -> None:
    assert unpack(https.url("hello.tar.gz"), bundles, verify_tls=False).name == "hello"


def test_basic_auth(http: FileServer, bundles: Path) -> None:
    http.auth = (USER, PASSWORD)
    url = http.url("hello.tar.gz")
    refused(FaultCode.TRANSFER_AUTH_FAILURE, url, bundles, username=USER, password="wrong")
    refused(FaultCode.TRANSFER_AUTH_FAILURE, url, bundles)
    assert unpack(url, bundles, username=USER, password=PASSWORD).name == "hello"


def test_redirect_is_followed_with_credentials_on_the_same_origin(http: FileServer, bundles: Path) -> None:
    http.auth = (USER, PASSWORD)
    http.redirects = {"/latest.tar.gz": "/hello.tar.gz"}
    assert unpack(http.url("latest.tar.gz"), bundles, username=USER, password=PASSWORD).name == "hello"
    assert [r.path for r in http.requests][-2:] == ["/latest.tar.gz", "/hello.tar.gz"]
    assert all(r.authorization for r in http.requests)


def test_credentials_are_not_sent_to_another_host(http: FileServer, bundles: Path) -> None:
    http.auth = (USER, PASSWORD)
    http.redirects = {"/latest.tar.gz": http.url("hello.tar.gz", host="localhost")}
    refused(FaultCode.TRANSFER_AUTH_FAILURE, http.url("latest.tar.gz"), bundles, username=USER, password=PASSWORD)
    elsewhere = [r for r in http.requests if r.host.startswith("localhost")]
    assert elsewhere and not any(r.authorization for r in elsewhere)


def test_redirect_loop_and_too_many_redirects(http: FileServer, bundles: Path) -> None:
    http.redirects = {"/a": "/b", "/b": "/a"}
    assert "loop" in refused(FaultCode.FILE_ACCESS_FAILURE, http.url("a"), bundles, sibling_digest=False).message
    http.redirects = {f"/r{i}": f"/r{i + 1}" for i in range(10)}
    fault = refused(FaultCode.FILE_ACCESS_FAILURE, http.url("r0"), bundles, sibling_digest=False, max_redirects=3)
    assert "more than 3 redirects" in fault.message


def test_redirect_from_https_to_http_is_refused(https: FileServer, http: FileServer, bundles: Path) -> None:
    https.redirects = {"/hello.tar.gz": http.url("hello.tar.gz")}
    refused(FaultCode.SERVER_INSECURE, https.url("hello.tar.gz"), bundles, verify_tls=False, sibling_digest=False)


def test_connection_refused(bundles: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hello.tar.gz"
    assert "cannot connect" in refused(FaultCode.SERVER_UNREACHABLE, url, bundles).message


def test_server_that_never_answers(bundles: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads or writes
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hello.tar.gz"
        refused(FaultCode.SERVER_UNREACHABLE, url, bundles, read_timeout=0.3)


def test_http_errors(http: FileServer, bundles: Path) -> None:
    refused(FaultCode.FILE_ACCESS_FAILURE, http.url("missing.tar.gz"), bundles)
    http.statuses = {"/hello.tar.gz": 500}
    assert "HTTP 500" in refused(FaultCode.FILE_ACCESS_FAILURE, http.url("hello.tar.gz"), bundles).message
    http.statuses = {"/hello.tar.gz": 403}
    refused(FaultCode.TRANSFER_AUTH_FAILURE, http.url("hello.tar.gz"), bundles)


def test_truncated_body(http: FileServer, bundles: Path) -> None:
    http.truncate_after = 100_000
    fault = refused(FaultCode.DOWNLOAD_INCOMPLETE, http.url("slow.tar"), bundles)
    assert "after 100000 of" in fault.message


def test_stalled_body(http: FileServer, bundles: Path) -> None:
    http.chunk_delay = 1.0
    refused(FaultCode.DOWNLOAD_INCOMPLETE, http.url("slow.tar"), bundles, read_timeout=0.3)


def test_archive_larger_than_allowed(http: FileServer, bundles: Path) -> None:
    refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, http.url("slow.tar"), bundles, max_archive_bytes=500_000)


def test_sibling_checksum_file(http: FileServer, served: Path, tmp_path: Path, bundles: Path) -> None:
    root = tmp_path / "with-sums"
    root.mkdir()
    archive = root / "hello.tar.gz"
    archive.write_bytes((served / "hello.tar.gz").read_bytes())
    with FileServer(root) as server:
        (root / "hello.tar.gz.sha256").write_text(f"{'0' * 64}  hello.tar.gz\n")
        fault = refused(FaultCode.CORRUPT_DATA, server.url("hello.tar.gz"), bundles)
        assert sha256_of(archive) in fault.message
        server.statuses = {"/hello.tar.gz.sha256": 503}
        refused(FaultCode.FILE_ACCESS_FAILURE, server.url("hello.tar.gz"), bundles)
        server.statuses = {}
        (root / "hello.tar.gz.sha256").write_text(f"{sha256_of(archive)}  hello.tar.gz\n")
        assert unpack(server.url("hello.tar.gz"), bundles).digest == f"sha256:{sha256_of(archive)}"
        # The caller's digest wins over the sibling, which is then not even asked for.
        server.requests.clear()
        (bundles / "du").rename(bundles / "first")
        unpack(server.url("hello.tar.gz"), bundles, digest=f"sha256:{sha256_of(archive)}")
        assert [r.path for r in server.requests] == ["/hello.tar.gz"]


def test_cancelling_removes_everything(http: FileServer, bundles: Path) -> None:
    http.chunk_delay = 0.05

    async def cancel_after_first_chunk() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def progress(done: int, total: int | None) -> None:
            if done:
                loop.call_soon_threadsafe(started.set)

        task = asyncio.create_task(TarPackager().unpack(PackageSource(http.url("slow.tar")), bundles / "du", progress))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_first_chunk())
    assert list(bundles.iterdir()) == []


def test_large_archive_is_streamed(tmp_path: Path, bundles: Path) -> None:
    """A 20 MiB archive goes through in far less Python memory than its size."""
    root = tmp_path / "large"
    root.mkdir()
    with tarfile.open(root / "large.tar", "w") as tar:
        config = tarfile.TarInfo("config.json")
        data = b'{"ociVersion": "1.0.2", "process": {"args": ["/big"]}, "root": {"path": "rootfs"}}'
        config.size = len(data)
        tar.addfile(config, io.BytesIO(data))
        blob = tarfile.TarInfo("rootfs/big")
        blob.size = 20 << 20
        tar.addfile(blob, _Noise(blob.size))
    with FileServer(root) as server:
        tracemalloc.start()
        try:
            info = unpack(server.url("large.tar"), bundles)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.disk_usage_kib >= 20 << 10
    assert peak < 4 << 20, f"peak Python memory {peak} bytes for a 20 MiB archive"


class _Noise(io.RawIOBase):
    """``size`` bytes of incompressible data, made in small chunks."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._left, 1 << 16)
        buffer[:count] = os.urandom(count)
        self._left -= count
        return count


def test_credentials_never_logged_or_shown(
    http: FileServer, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http.auth = (USER, PASSWORD)
    http.redirects = {"/latest.tar.gz": "/hello.tar.gz", "/other": http.url("hello.tar.gz", host="localhost")}
    wrong, right = {"username": USER, "password": "x" + PASSWORD}, {"username": USER, "password": PASSWORD}
    faults = [
        refused(FaultCode.TRANSFER_AUTH_FAILURE, http.url("hello.tar.gz"), bundles, **wrong),
        refused(FaultCode.TRANSFER_AUTH_FAILURE, http.url("other"), bundles, **right),
        refused(FaultCode.INVALID_ARGUMENTS, f"http://{USER}:{PASSWORD}@127.0.0.1:{http.port}/x", bundles),
    ]
    unpack(http.url("latest.tar.gz"), bundles, **right)
    source = PackageSource(http.url("x"), username=USER, password=PASSWORD)
    shown = [repr(source), repr(TarPackager()), *(str(f) for f in faults), *(repr(f.as_dict()) for f in faults)]
    shown += [record.getMessage() for record in caplog.records]
    assert caplog.records, "the packager logs what it does"
    for text in shown:
        assert PASSWORD not in text and USER not in text, text
