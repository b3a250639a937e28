"""The tar packager fetching over real HTTP and HTTPS servers on 127.0.0.1: what is its own (what every
packager does alike is tests/contract/test_packager_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import socket
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers import tar as tar_module
from dsm_tr181.packagers.tar import TarPackager, TarPackagerConfig
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


def test_credentials_never_logged_or_shown(http: FileServer, bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
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


# --- no digest expected: extraction runs while the download proceeds ---------------------------

BLOB = 512 * 1024


def bundle_tar(path: Path, blobs: int, *, broken_header: int | None = None, mode: str = "w") -> Path:
    """A flat bundle: config.json, rootfs/first, then ``blobs`` members of noise; the header
    of blob number ``broken_header`` gets a wrong checksum."""
    with tarfile.open(path, mode, format=tarfile.USTAR_FORMAT) as tar:
        config = b'{"ociVersion": "1.0.2", "process": {"args": ["/x"]}, "root": {"path": "rootfs"}}'
        for name, data in [("config.json", config), ("rootfs/first", b"1")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for index in range(blobs):
            info = tarfile.TarInfo(f"rootfs/blob{index}")
            info.size = BLOB
            tar.addfile(info, io.BytesIO(os.urandom(BLOB) if mode == "w" else bytes(BLOB)))
    if broken_header is not None:
        data = bytearray(path.read_bytes())
        header = data.index(f"rootfs/blob{broken_header}".encode())
        data[header + 148 : header + 156] = b"0000000\0"
        path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """big.tar (4 MiB), corrupt.tar (its 3rd blob's header broken), and big.tar again in
    signed/ with the right sibling checksum and in forged/ with a wrong one."""
    root = tmp_path_factory.mktemp("streamed")
    big = bundle_tar(root / "big.tar", 8)
    bundle_tar(root / "corrupt.tar", 8, broken_header=2)
    for folder, digest in [("signed", sha256_of(big)), ("forged", "0" * 64)]:
        (root / folder).mkdir()
        (root / folder / "big.tar").write_bytes(big.read_bytes())
        (root / folder / "big.tar.sha256").write_text(f"{digest}  big.tar\n")
    return root


@pytest.fixture
def stream_server(streamed: Path) -> Iterator[FileServer]:
    with FileServer(streamed) as server:
        yield server


@pytest.fixture
def timeline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What happens in order: ``(done, total)`` progress calls (when handed to :func:`unpack`)
    and ``("extract", "start"|"end")`` around the extraction."""
    events: list[tuple[Any, ...]] = []
    extract = tar_module.extract_archive

    def recorded(*args: Any, **kwargs: Any) -> Any:
        events.append(("extract", "start"))
        result = extract(*args, **kwargs)
        events.append(("extract", "end"))
        return result

    monkeypatch.setattr(tar_module, "extract_archive", recorded)
    return events


def received_before(events: list[tuple[Any, ...]], marker: tuple[str, str]) -> int:
    """Bytes downloaded when ``marker`` happened."""
    done = [event[0] for event in events[: events.index(marker)] if event[0] != "extract"]
    return max(done, default=0)


def test_without_a_digest_extraction_runs_while_the_download_proceeds(
    stream_server: FileServer, streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    stream_server.chunk_delay = 0.005
    size = (streamed / "big.tar").stat().st_size
    unpacked_early: list[bool] = []

    def progress(done: int, total: int | None) -> None:  # the download thread
        timeline.append((done, total))
        if done < size:
            unpacked_early.append(any(bundles.glob(".staging-*/rootfs/blob1")))

    source = PackageSource(stream_server.url("big.tar"))
    info = asyncio.run(TarPackager().unpack(source, bundles / "du", progress))
    assert info.digest == f"sha256:{sha256_of(streamed / 'big.tar')}"
    assert received_before(timeline, ("extract", "start")) < size
    assert any(unpacked_early), "no file was unpacked before the download ended"
    assert sorted(p.name for p in bundles.iterdir()) == ["du"]


@pytest.mark.parametrize("how", ["sibling", "caller"])
def test_an_expected_digest_is_checked_before_anything_is_unpacked(
    stream_server: FileServer, streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]], how: str
) -> None:
    digest = f"sha256:{sha256_of(streamed / 'big.tar')}"
    url = stream_server.url("signed/big.tar" if how == "sibling" else "big.tar")
    info = unpack(url, bundles, timeline, digest="" if how == "sibling" else digest)
    assert info.digest == digest
    size = (streamed / "big.tar").stat().st_size
    assert received_before(timeline, ("extract", "start")) == size


def test_a_wrong_sibling_digest_leaves_no_extraction_at_all(
    stream_server: FileServer, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    refused(FaultCode.CORRUPT_DATA, stream_server.url("forged/big.tar"), bundles, progress=timeline)
    assert ("extract", "start") not in timeline


def test_body_truncated_while_extracting(
    stream_server: FileServer, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    stream_server.truncate_after = 3 * BLOB
    fault = refused(FaultCode.DOWNLOAD_INCOMPLETE, stream_server.url("big.tar"), bundles, progress=timeline)
    assert f"after {3 * BLOB} of" in fault.message
    assert ("extract", "start") in timeline


def test_body_truncated_after_the_end_of_archive_is_not_published(
    stream_server: FileServer, streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    """The members and the end-of-archive block all arrived and unpacked; the last byte did not."""
    stream_server.truncate_after = (streamed / "big.tar").stat().st_size - 1
    refused(FaultCode.DOWNLOAD_INCOMPLETE, stream_server.url("big.tar"), bundles, progress=timeline)
    assert ("extract", "end") in timeline


def test_corrupt_archive_stops_the_download(
    stream_server: FileServer, streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    stream_server.chunk_delay = 0.05  # the whole archive would take 3.2 s
    started = time.monotonic()
    fault = refused(FaultCode.CORRUPT_DATA, stream_server.url("corrupt.tar"), bundles, progress=timeline)
    assert time.monotonic() - started < 2.5
    assert "bad checksum" in fault.message
    last_done = max(event[0] for event in timeline if event[0] != "extract")
    assert last_done < (streamed / "corrupt.tar").stat().st_size


class RawServer:
    """Answers one GET with ``answer`` (status line, headers, body), then stalls until
    closed, or closes the connection at once when ``stall`` is false."""

    def __init__(self, answer: bytes, *, stall: bool = True) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self._closed = threading.Event()
        if not stall:
            self._closed.set()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/stream.tar"
        threading.Thread(target=self._serve, args=(answer,), daemon=True).start()

    def _serve(self, answer: bytes) -> None:
        with contextlib.suppress(OSError), self._listener.accept()[0] as connection:
            connection.recv(65536)
            connection.sendall(answer)
            self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


@pytest.fixture
def stalling(streamed: Path) -> Iterator[RawServer]:
    """Announces big.tar whole, sends its first 1.5 MiB, then nothing more."""
    data = (streamed / "big.tar").read_bytes()
    server = RawServer(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[: 3 * BLOB])
    yield server
    server.close()


def test_server_stalling_mid_stream(stalling: RawServer, bundles: Path, timeline: list[tuple[Any, ...]]) -> None:
    options = {"read_timeout": 0.3, "sibling_digest": False}
    fault = refused(FaultCode.DOWNLOAD_INCOMPLETE, stalling.url, bundles, progress=timeline, **options)
    assert f"stalled after {3 * BLOB} bytes" in fault.message
    assert ("extract", "start") in timeline


def test_cancelling_during_a_stall_is_prompt(stalling: RawServer, bundles: Path) -> None:
    """The read from the stalled server is aborted at once (read_timeout stays 60 s)."""

    async def cancel_once_stalled() -> float:
        loop = asyncio.get_running_loop()
        stalled = asyncio.Event()

        def progress(done: int, total: int | None) -> None:
            if done == 3 * BLOB:
                loop.call_soon_threadsafe(stalled.set)

        packager = TarPackager(TarPackagerConfig(sibling_digest=False))
        task = asyncio.create_task(packager.unpack(PackageSource(stalling.url), bundles / "du", progress))
        await stalled.wait()
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(asyncio.wait_for(cancel_once_stalled(), 10)) < 2
    assert list(bundles.iterdir()) == []


def test_archive_limit_reached_while_extracting(streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]]) -> None:
    """No Content-Length: the limit can only be found while the body streams in."""
    server = RawServer(b"HTTP/1.0 200 OK\r\n\r\n" + (streamed / "big.tar").read_bytes(), stall=False)
    try:
        options = {"max_archive_bytes": 3 * BLOB, "sibling_digest": False}
        refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, server.url, bundles, progress=timeline, **options)
    finally:
        server.close()
    assert ("extract", "start") in timeline


def test_unpacked_limit_reached_while_downloading(
    stream_server: FileServer, streamed: Path, bundles: Path, timeline: list[tuple[Any, ...]]
) -> None:
    stream_server.chunk_delay = 0.05  # the whole archive would take 3.2 s
    started = time.monotonic()
    url = stream_server.url("big.tar")
    refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, url, bundles, progress=timeline, max_unpacked_bytes=2 * BLOB)
    assert time.monotonic() - started < 2.5
    last_done = max(event[0] for event in timeline if event[0] != "extract")
    assert last_done < (streamed / "big.tar").stat().st_size


def test_out_of_space_while_extracting(tmp_path: Path, small_filesystem: Path) -> None:
    root = tmp_path / "zeros"
    root.mkdir()
    bundle_tar(root / "zeros.tar.gz", 6, mode="w:gz")  # 3 MiB of zeros in a few KiB: it passes the size check
    with FileServer(root) as server:
        fault = refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, server.url("zeros.tar.gz"), small_filesystem)
    assert "no space" in fault.message
