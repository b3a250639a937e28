"""The packager contract (dsm_tr181/lcm/ports.py Packager), one suite for every packager.

A packager turns a URL into an unpacked bundle at ``target``, reports progress, names the
digest of what it fetched, and on any failure leaves nothing behind (no target, no
``.staging-`` directory). Each packager enters :data:`FORMATS` with the way a package of
its kind is made from a bundle directory: tar (a DU archive) and image (an OCI image
archive, a tar of an image layout, over HTTP or from a file; a caller's digest checks the
archive, BundleInfo.digest names the image's manifest).
What only one packager does (tar's sibling .sha256 file, redirects and credentials,
streaming limits) stays in that packager's own test modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, Packager, PackageSource
from tests.support.httpserver import FileServer, free_port

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Format:
    """How to build the packager under test and a package of its kind."""

    packager: Callable[[Path], Packager]  # (a directory of its own for state) -> the packager
    # (bundle directory, directory to write into) -> the package's file name there
    make: Callable[[Path, Path], str]
    # the digest the packager names a package by (BundleInfo.digest): a DU archive's own,
    # an image's manifest digest (what a registry and a signature name it by)
    digest: Callable[[Path], str]


def _tar_packager(state: Path) -> Packager:
    from dsm_tr181.packagers.tar import TarPackager

    return TarPackager()


def _tar_package(bundle: Path, out: Path) -> str:
    make_archive(bundle, out / f"{bundle.name}.tar.gz")
    return f"{bundle.name}.tar.gz"


def _image_packager(state: Path) -> Packager:
    from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig

    return ImagePackager(ImagePackagerConfig(), state / "layers")


def _image_package(bundle: Path, out: Path) -> str:
    """An OCI image archive (a tar of an image layout) of the bundle's rootfs and process,
    titled and versioned as the bundle."""
    from dsm_tr181.bundlegen.ocilayout import Entry, Layout

    entries = []
    rootfs = bundle / "rootfs"
    for path in sorted(rootfs.rglob("*")):
        name, mode = str(path.relative_to(rootfs)), path.lstat().st_mode & 0o7777
        if path.is_symlink():
            entries.append(Entry(name, kind="symlink", target=str(path.readlink())))
        elif path.is_dir():
            entries.append(Entry(name, kind="dir", mode=mode))
        else:
            entries.append(Entry(name, path.read_bytes(), mode=mode))
    process = json.loads((bundle / "config.json").read_text())["process"]
    layout = Layout(out.parent / f"layout-{bundle.name}")
    annotations = {"org.opencontainers.image.title": bundle.name, "org.opencontainers.image.version": "2.1"}
    layout.tag(layout.image([entries], {"Cmd": process["args"]}, annotations=annotations), "2.1")
    with tarfile.open(out / f"{bundle.name}.oci.tar", "w") as tar:
        tar.add(layout.root, arcname=".")
    return f"{bundle.name}.oci.tar"


def _manifest_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("./index.json")
        assert member is not None
        return str(json.load(member)["manifests"][0]["digest"])


FORMATS: dict[str, Format] = {
    "tar": Format(_tar_packager, _tar_package, lambda package: sha256_of(package)),
    "image": Format(_image_packager, _image_package, lambda package: _manifest_digest(package)),
}


@dataclass
class Case:
    name: str
    format: Format
    served: Path  # what the HTTP server hands out
    bundles: Path  # where unpacked bundles go
    server: FileServer
    state: Path  # the packager's own (the image packager's layer store)

    def package(self, bundle_name: str = "hello", noise: int = 0) -> str:
        """A package of a busybox-less bundle (a stand-in binary) with ``noise`` random bytes."""
        work = self.served.parent / "work"
        binary = work / "fake-busybox"
        if not binary.exists():
            work.mkdir(exist_ok=True)
            binary.write_bytes(b"\x7fELF" + bytes(4096))
        bundle = make_bundle(work / bundle_name, busybox=binary, version="2.1")
        if noise:
            (bundle / "rootfs" / "noise").write_bytes(hashlib.shake_256(b"noise").digest(noise))
        return self.format.make(bundle, self.served)

    def unpack(self, url: str, progress: list[tuple[int, int | None]] | None = None, digest: str = "") -> BundleInfo:
        seen = progress if progress is not None else []
        source = PackageSource(url, digest=digest)
        packager = self.format.packager(self.state)

        def progress(done: int, total: int | None, layer: object = None) -> None:
            seen.append((done, total))

        return asyncio.run(packager.unpack(source, self.bundles / "du", progress))

    def refused(self, code: FaultCode, url: str, digest: str = "") -> Fault:
        with pytest.raises(Fault) as caught:
            self.unpack(url, digest=digest)
        assert caught.value.code is code, caught.value
        assert list(self.bundles.iterdir()) == [], "something was left behind"
        return caught.value


@pytest.fixture(params=list(FORMATS))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    served, bundles = tmp_path / "served", tmp_path / "bundles"
    served.mkdir()
    bundles.mkdir()
    (tmp_path / "state").mkdir()
    with FileServer(served) as server:
        yield Case(request.param, FORMATS[request.param], served, bundles, server, tmp_path / "state")


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpacks_over_http_with_progress_and_digest(case: Case) -> None:
    name = case.package(noise=300_000)
    progress: list[tuple[int, int | None]] = []
    info = case.unpack(case.server.url(name), progress)
    assert info.path == case.bundles / "du"
    assert (info.name, info.version) == ("hello", "2.1")
    assert info.digest == case.format.digest(case.served / name)
    assert info.disk_usage_kib >= 300_000 // 1024
    config = json.loads((info.path / "config.json").read_text())
    assert config["root"]["path"] == "rootfs" and (info.path / "rootfs" / "bin" / "busybox").is_file()
    assert len((info.path / "rootfs" / "noise").read_bytes()) == 300_000
    done = [bytes_done for bytes_done, _ in progress]
    assert done == sorted(done) and done[-1] > 0
    assert sorted(p.name for p in case.bundles.iterdir()) == ["du"]  # no staging directory left


def test_unpacks_a_local_file(case: Case) -> None:
    name = case.package()
    info = case.unpack((case.served / name).as_uri())
    assert info.name == "hello" and info.digest == case.format.digest(case.served / name)


def test_an_expected_digest_is_checked(case: Case) -> None:
    name = case.package()
    case.refused(FaultCode.CORRUPT_DATA, case.server.url(name), digest="sha256:" + "0" * 64)
    assert case.unpack(case.server.url(name), digest=sha256_of(case.served / name)).name == "hello"


def test_unreachable_server_and_missing_package(case: Case) -> None:
    case.refused(FaultCode.SERVER_UNREACHABLE, f"http://127.0.0.1:{free_port()}/hello")
    case.refused(FaultCode.FILE_ACCESS_FAILURE, case.server.url("missing.tar.gz"))


def test_corrupt_package(case: Case) -> None:
    name = case.package()
    data = (case.served / name).read_bytes()
    (case.served / name).write_bytes(data[: len(data) // 2] + bytes(64) + data[len(data) // 2 :])
    case.refused(FaultCode.CORRUPT_DATA, case.server.url(name))


def test_cancelling_removes_everything(case: Case) -> None:
    name = case.package(noise=1 << 20)
    case.server.chunk_delay = 0.05

    async def cancel_after_first_chunk() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def progress(done: int, total: int | None, layer: object = None) -> None:
            if done:
                loop.call_soon_threadsafe(started.set)

        source = PackageSource(case.server.url(name))
        task = asyncio.create_task(case.format.packager(case.state).unpack(source, case.bundles / "du", progress))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_first_chunk())
    assert list(case.bundles.iterdir()) == []


def test_remove_is_idempotent(case: Case) -> None:
    info = case.unpack(case.server.url(case.package()))
    packager = case.format.packager(case.state)
    asyncio.run(packager.remove(info.path))
    assert not info.path.exists()
    asyncio.run(packager.remove(info.path))
