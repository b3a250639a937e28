"""The tar packager against good bundles and a corpus of bad archives generated here.

Every refusal checks the fault code and that nothing was left behind: no target,
no .staging-* directory, no download (the bundles directory stays empty).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dsm_tools.sample_bundle import BUSYBOX, make_archive, make_bundle, oci_config

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import BundleInfo, PackageSource
from dsm_tr181.packagers.extract import ExtractLimits, extract_archive
from dsm_tr181.packagers.tar import TarPackager, TarPackagerConfig
from dsm_tr181.packagers.worker import Cancel

pytestmark = pytest.mark.unit

MTIME = 1_700_000_000


@dataclass
class Member:
    """One archive member to generate: a TarInfo plus its data."""

    info: tarfile.TarInfo
    data: bytes = b""


def file(name: str, data: bytes = b"", mode: int = 0o644, **attrs: Any) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return Member(info, data)


def directory(name: str, mode: int = 0o755) -> Member:
    return special(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Member:
    return special(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Member:
    return special(name, tarfile.LNKTYPE, linkname=target)


def special(name: str, kind: bytes, **attrs: Any) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mtime = kind, MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return Member(info)


def config_json(prefix: str = "", **overrides: Any) -> Member:
    config = oci_config(["/bin/sh", "-c", "true"], annotations={"org.opencontainers.image.version": "2.0"})
    config.update(overrides)
    return file(prefix + "config.json", json.dumps(config).encode())


def bundle_members(prefix: str = "app/") -> list[Member]:
    """A small valid bundle, with the link kinds a real root filesystem has."""
    return [
        *([directory(prefix)] if prefix else []),
        config_json(prefix),
        directory(prefix + "rootfs/"),
        directory(prefix + "rootfs/bin/"),
        file(prefix + "rootfs/bin/busybox", b"\x7fELF" + b"\0" * 2000, mode=0o755),
        symlink(prefix + "rootfs/bin/sh", "busybox"),
        symlink(prefix + "rootfs/bin/ls", "/bin/busybox"),
        hardlink(prefix + "rootfs/bin/busybox.hard", prefix + "rootfs/bin/busybox"),
        directory(prefix + "rootfs/etc/"),
        file(prefix + "rootfs/etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"),
    ]


def write_archive(path: Path, members: Sequence[Member], mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member.info, io.BytesIO(member.data) if member.info.isreg() else None)
    return path


@dataclass
class Workspace:
    archives: Path
    bundles: Path

    @property
    def target(self) -> Path:
        return self.bundles / "du"

    def unpack(self, archive: Path | str, digest: str = "", **config: Any) -> BundleInfo:
        packager = TarPackager(TarPackagerConfig(**config))
        seen: list[tuple[int, int | None]] = []
        info = asyncio.run(
            packager.unpack(PackageSource(str(archive), digest=digest), self.target, lambda d, t: seen.append((d, t)))
        )
        assert seen and seen[-1][0] == seen[-1][1]
        return info

    def refused(self, code: FaultCode, archive: Path | str, digest: str = "", **config: Any) -> Fault:
        with pytest.raises(Fault) as caught:
            self.unpack(archive, digest, **config)
        assert caught.value.code is code, caught.value
        assert list(self.bundles.iterdir()) == [], "something was left behind"
        return caught.value


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    space = Workspace(tmp_path / "archives", tmp_path / "bundles")
    space.archives.mkdir()
    space.bundles.mkdir()
    yield space
    assert not (tmp_path / "escaped").exists(), "an archive wrote outside its staging directory"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- good bundles -----------------------------------------------------------------


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static (/bin/busybox)")
@pytest.mark.parametrize(("flat", "suffix"), [(False, ".tar"), (False, ".tar.gz"), (True, ".tar.xz"), (True, ".tar")])
def test_sample_bundle_layouts_unpack(ws: Workspace, tmp_path: Path, flat: bool, suffix: str) -> None:
    bundle = make_bundle(tmp_path / "work" / "hello", version="1.2.3", vendor="rdk", description="demo")
    # The name says nothing about the compression: it is told by content.
    archive = make_archive(bundle, ws.archives / f"hello{suffix}", flat=flat).rename(ws.archives / "hello.bin")
    info = ws.unpack(archive)
    assert (info.path, info.name, info.version, info.vendor, info.description) == (
        ws.target,
        "hello",
        "1.2.3",
        "rdk",
        "demo",
    )
    assert info.digest == f"sha256:{sha256_of(archive)}"
    assert info.annotations["org.opencontainers.image.title"] == "hello"
    size = sum(p.stat().st_size for p in (bundle).rglob("*") if p.is_file() and not p.is_symlink())
    assert info.disk_usage_kib == -(-size // 1024)
    assert (ws.target / "rootfs" / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(ws.target / "rootfs" / "bin" / "sh") == "busybox"
    assert sorted(p.name for p in ws.bundles.iterdir()) == ["du"]


def test_generated_bundle_keeps_links_modes_and_times(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "app.tar.gz", bundle_members(), "w:gz")
    info = ws.unpack(archive)
    rootfs = ws.target / "rootfs"
    assert os.readlink(rootfs / "bin" / "ls") == "/bin/busybox"
    assert os.stat(rootfs / "bin" / "busybox.hard").st_ino == os.stat(rootfs / "bin" / "busybox").st_ino
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "busybox").st_mode) == 0o755
    assert os.stat(rootfs / "etc" / "passwd").st_mtime == MTIME
    assert os.stat(rootfs / "etc").st_mtime == MTIME
    # Name from the top folder (no title annotation); hardlinks count once.
    size = sum(m.info.size for m in bundle_members() if m.info.isreg())
    assert (info.name, info.version, info.disk_usage_kib) == ("app", "2.0", -(-size // 1024))


def test_flat_archive_without_title_is_named_after_the_file(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "my-app-1.0.tar.xz", bundle_members(prefix=""), "w:xz")
    assert ws.unpack(archive).name == "my-app-1.0"


def test_dot_slash_prefixed_names_are_the_flat_layout(ws: Workspace) -> None:
    members = bundle_members(prefix="./")
    assert members[0].info.name == "./"
    members[0].info.mode = 0o750
    info = ws.unpack(write_archive(ws.archives / "dots.tar", members))
    assert (ws.target / "rootfs" / "etc" / "passwd").is_file()
    assert stat.S_IMODE(os.stat(ws.target).st_mode) == 0o750
    assert info.name == "dots"


def test_manifest_fills_in_what_annotations_leave_empty(ws: Workspace) -> None:
    manifest = {"name": "from-manifest", "version": "9.9", "vendor": "acme", "description": "d", "extra": 1}
    members = [*bundle_members(), file("app/manifest.json", json.dumps(manifest).encode())]
    info = ws.unpack(write_archive(ws.archives / "m.tar", members))
    # The annotation version (2.0) wins; the manifest fills the rest.
    assert (info.name, info.version, info.vendor, info.description) == ("from-manifest", "2.0", "acme", "d")


def test_dobby_extended_bundle_is_accepted(ws: Workspace) -> None:
    plugins = {"logging": {"required": True, "data": {"sink": "devNull"}}}
    members = [m for m in bundle_members() if m.info.name != "app/config.json"]
    members.append(config_json("app/", ociVersion="1.0.2-dobby", rdkPlugins=plugins))
    ws.unpack(write_archive(ws.archives / "dobby.tar", members))
    assert json.loads((ws.target / "config.json").read_text())["ociVersion"] == "1.0.2-dobby"


def test_special_bits_are_stripped_owners_kept_and_metadata_claimed(ws: Workspace) -> None:
    config = config_json("app/")
    config.info.mode, config.info.uid = 0o666, 1234
    members = [
        *[m for m in bundle_members() if m.info.name not in ("app/", "app/config.json")],
        directory("app/", mode=0o777),
        config,
        file("app/rootfs/bin/su", b"x", mode=0o4755, uid=1234, gid=5678),
        file("app/rootfs/bin/wall", b"x", mode=0o2755),
        directory("app/rootfs/tmp/", mode=0o1777),
    ]
    ws.unpack(write_archive(ws.archives / "suid.tar", members))
    rootfs = ws.target / "rootfs"
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "wall").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rootfs / "tmp").st_mode) == 0o777
    if os.geteuid() == 0:
        assert (os.stat(rootfs / "bin" / "su").st_uid, os.stat(rootfs / "bin" / "su").st_gid) == (1234, 5678)
    # The bundle's own metadata is the daemon's whatever the archive said.
    assert stat.S_IMODE(os.stat(ws.target).st_mode) == 0o755
    config_stat = os.stat(ws.target / "config.json")
    assert (stat.S_IMODE(config_stat.st_mode), config_stat.st_uid) == (0o644, os.geteuid())


def test_correct_digest_and_sibling_checksum_are_accepted(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "app.tar", bundle_members())
    ws.unpack(archive, digest=f"sha256:{sha256_of(archive).upper()}")
    shutil.rmtree(ws.target)
    (ws.archives / "app.tar.sha256").write_text(f"{sha256_of(archive)}  out/app.tar\n")
    assert ws.unpack(archive).digest == f"sha256:{sha256_of(archive)}"


def test_special_files_when_allowed(ws: Workspace) -> None:
    members = [*bundle_members(), special("app/rootfs/fifo", tarfile.FIFOTYPE, mode=0o640)]
    if os.geteuid() == 0:
        members.append(special("app/rootfs/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666))
    ws.unpack(write_archive(ws.archives / "dev.tar", members), allow_special_files=True)
    assert stat.S_ISFIFO(os.lstat(ws.target / "rootfs" / "fifo").st_mode)
    if os.geteuid() == 0:
        assert os.stat(ws.target / "rootfs" / "null").st_rdev == os.makedev(1, 3)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write sparse members")
@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_sparse_members_are_expanded(ws: Workspace, tmp_path: Path, tar_format: str) -> None:
    tree = tmp_path / "sparse"
    (tree / "rootfs").mkdir(parents=True)
    (tree / "config.json").write_text(json.dumps(oci_config(["/bin/true"])))
    with (tree / "rootfs" / "holes").open("wb") as holes:
        holes.seek(3 << 20)
        holes.write(os.urandom(5000))
        holes.truncate(8 << 20)
    archive = ws.archives / f"sparse-{tar_format}.tar"
    command = ["tar", "--sparse", f"--format={tar_format}", "-cf", str(archive), "-C", str(tree), "."]
    subprocess.run(command, check=True)
    assert archive.stat().st_size < 1 << 20  # the holes are not in the archive
    ws.unpack(archive)
    assert (ws.target / "rootfs" / "holes").read_bytes() == (tree / "rootfs" / "holes").read_bytes()


def test_remove_is_idempotent(ws: Workspace) -> None:
    ws.unpack(write_archive(ws.archives / "app.tar", bundle_members()))
    packager = TarPackager()
    asyncio.run(packager.remove(ws.target))
    asyncio.run(packager.remove(ws.target))
    assert not ws.target.exists()


# --- the malicious and broken corpus ------------------------------------------------


def without(name: str) -> list[Member]:
    return [m for m in bundle_members() if m.info.name != name]


# Each case: a valid bundle plus (or with a member replaced by) something unsafe.
UNSAFE: dict[str, list[Member]] = {
    "traversal": [*bundle_members(), file("app/../../escaped", b"x")],
    "symlink escape, then a file written through it": [
        *bundle_members(),
        symlink("app/rootfs/out", "../../../.."),
        file("app/rootfs/out/escaped", b"x"),
    ],
    "relative symlink leaving the bundle": [*bundle_members(), symlink("app/rootfs/etc/shadow", "../../../etc/shadow")],
    "absolute symlink outside rootfs": [*bundle_members(), symlink("app/hostetc", "/etc")],
    "config.json is a symlink": [*without("app/config.json"), symlink("app/config.json", "/etc/passwd")],
    "rootfs is a symlink": [directory("app/"), config_json("app/"), symlink("app/rootfs", "/")],
    "file written through an inner symlink": [
        *bundle_members(),
        symlink("app/rootfs/lib", "bin"),
        file("app/rootfs/lib/x", b"x"),
    ],
    "hardlink to an absolute path": [*bundle_members(), hardlink("app/rootfs/shadow", "/etc/shadow")],
    "hardlink climbing out": [*bundle_members(), hardlink("app/rootfs/shadow", "../etc/shadow")],
    "hardlink to a file not in the archive": [*bundle_members(), hardlink("app/rootfs/shadow", "app/rootfs/shadow2")],
    "hardlink to a symlink": [*bundle_members(), hardlink("app/rootfs/bin/sh2", "app/rootfs/bin/sh")],
    "device node": [*bundle_members(), special("app/rootfs/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)],
    "block device": [*bundle_members(), special("app/rootfs/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "FIFO": [*bundle_members(), special("app/rootfs/fifo", tarfile.FIFOTYPE)],
    "duplicate member": [*bundle_members(), symlink("app/rootfs/etc/passwd", "/etc/passwd")],
    "file under a regular file": [*bundle_members(), file("app/rootfs/etc/passwd/x", b"x")],
    "stray file beside the top folder": [*bundle_members(), file("README", b"x")],
    "unsupported member type": [*bundle_members(), special("app/rootfs/volume", b"V")],
    "no layout at all": [file("a/b/config.json", b"{}")],
}


@pytest.mark.parametrize("members", UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_archives_are_refused(ws: Workspace, members: list[Member]) -> None:
    fault = ws.refused(FaultCode.CORRUPT_DATA, write_archive(ws.archives / "evil.tar", members))
    assert "evil.tar" in fault.message


# A name taken before, or a parent or hardlink target that is not what it must be: the
# reason names what is there (read from the file system, not from a list of every name).
TAKEN = {
    "file over a file": (file("app/rootfs/etc/passwd", b"x"), "duplicate member (a regular file"),
    "directory over a file": (directory("app/rootfs/etc/passwd/"), "duplicate member (a regular file"),
    "file over a directory": (file("app/rootfs/etc", b"x"), "duplicate member (a directory"),
    "symlink over a symlink": (symlink("app/rootfs/bin/sh", "ls"), "duplicate member (a symlink"),
    "hardlink over a file": (
        hardlink("app/rootfs/etc/passwd", "app/rootfs/bin/busybox"),
        "duplicate member (a regular file",
    ),
    "FIFO over a hardlink": (special("app/rootfs/bin/busybox.hard", tarfile.FIFOTYPE), "duplicate member"),
    "file under a symlink": (file("app/rootfs/bin/sh/x", b"x"), "its parent 'app/rootfs/bin/sh' is a symlink"),
    "hardlink to a directory": (hardlink("app/rootfs/x", "app/rootfs/etc"), "not a regular file extracted before"),
    "hardlink through a symlinked directory": (
        hardlink("app/rootfs/x", "app/rootfs/lnk/busybox"),
        "not a regular file extracted before",
    ),
}


@pytest.mark.parametrize(("member", "reason"), TAKEN.values(), ids=TAKEN.keys())
def test_taken_names_are_refused_with_what_is_there(ws: Workspace, member: Member, reason: str) -> None:
    members = [*bundle_members(), symlink("app/rootfs/lnk", "bin"), member]
    archive = write_archive(ws.archives / "taken.tar", members)
    fault = ws.refused(FaultCode.CORRUPT_DATA, archive, allow_special_files=True)  # the FIFO gets as far as mkfifo
    assert reason in fault.message, fault.message


def test_a_directory_named_again_is_not_a_duplicate(ws: Workspace) -> None:
    members = [*bundle_members(), directory("app/rootfs/etc/", mode=0o700), file("app/rootfs/etc/hosts", b"x")]
    info = ws.unpack(write_archive(ws.archives / "again.tar", members))
    etc = info.path / "rootfs" / "etc"
    assert (etc / "hosts").read_bytes() == b"x" and (etc / "passwd").is_file()
    assert etc.stat().st_mode & 0o777 == 0o700  # the later header's metadata


def extraction_peak(tmp_path: Path, members: int) -> int:
    """Bytes of Python memory at the peak of unpacking ``members`` one-byte files."""
    archive = tmp_path / f"many{members}.tar"
    with tarfile.open(archive, "w") as tar:
        for n in range(members):
            info = tarfile.TarInfo(f"d{n // 1000}/file-{n:06d}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    (staging := tmp_path / f"out{members}").mkdir()
    tracemalloc.start()
    try:
        with archive.open("rb") as stream:
            extract_archive(stream, staging, ExtractLimits(1 << 30, members, False), archive.name, Cancel())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_an_unpack_does_not_grow_with_its_members(tmp_path: Path) -> None:
    """Names are not remembered (the file system knows them): 8000 members peak as 2000 do
    (a dict of every name took ~100 bytes per member, ~10 MiB at 100k)."""
    assert extraction_peak(tmp_path, 8000) - extraction_peak(tmp_path, 2000) < 100_000


def test_absolute_member_path_is_refused(ws: Workspace, tmp_path: Path) -> None:
    archive = write_archive(ws.archives / "abs.tar", [*bundle_members(), file(str(tmp_path / "escaped"), b"x")])
    assert "absolute path" in ws.refused(FaultCode.CORRUPT_DATA, archive).message


def test_traversal_names_the_member(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "evil.tar.gz", [*bundle_members(), file("../escaped", b"x")], "w:gz")
    fault = ws.refused(FaultCode.CORRUPT_DATA, archive)
    assert "'../escaped'" in fault.message and "'..' component" in fault.message


def test_oversize_archive_and_unpacked_size_and_entry_count(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "big.tar", [*bundle_members(), file("app/rootfs/blob", b"\0" * 50_000)])
    ws.refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, archive, max_unpacked_bytes=20_000)
    ws.refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, archive, max_archive_bytes=30_000)
    ws.refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, archive, max_entries=5)


def test_huge_pax_header_is_refused_before_it_is_read(ws: Workspace) -> None:
    blob = file("app/rootfs/blob", b"x")
    blob.info.pax_headers = {"comment": "x" * (2 << 20)}
    ws.refused(FaultCode.CORRUPT_DATA, write_archive(ws.archives / "pax.tar", [*bundle_members(), blob]))


def test_truncated_and_corrupt_compression(ws: Workspace) -> None:
    good_gz = write_archive(ws.archives / "good.tar.gz", bundle_members(), "w:gz").read_bytes()
    good_xz = write_archive(ws.archives / "good.tar.xz", bundle_members(), "w:xz").read_bytes()
    good_tar = write_archive(ws.archives / "good.tar", bundle_members()).read_bytes()
    end = good_tar.rstrip(b"\0")
    header = good_tar.index(b"app/rootfs/etc/passwd")  # the last member: the bundle is whole without it
    bad_checksum = good_tar[: header + 148] + b"0000000\0" + good_tar[header + 156 :]
    broken = {
        "half.tar.gz": good_gz[: len(good_gz) // 2],
        "no-trailer.tar.gz": good_gz[:-8],  # every member intact, the gzip CRC/size missing
        "bad-crc.tar.gz": good_gz[:-8] + bytes(8),
        "corrupt.tar.xz": good_xz[:60] + bytes(b ^ 0x55 for b in good_xz[60:200]) + good_xz[200:],
        "half.tar.xz": good_xz[: len(good_xz) // 2],
        "cut-mid-member.tar": good_tar[:3000],
        "corrupt-last-header.tar": bad_checksum,
        "no-end-block.tar": end + b"\0" * (-len(end) % 512),
        "not-a-tar.tar": os.urandom(4096),
        "empty.tar": b"",
        "bzip2.tar.bz2": b"BZh91AY&SY" + bytes(100),
        "garbage-after-gzip.tar.gz": good_gz + b"garbage!" * 4,
    }
    for name, data in broken.items():
        (ws.archives / name).write_bytes(data)
        ws.refused(FaultCode.CORRUPT_DATA, ws.archives / name)


def test_concatenated_xz_streams_are_one_archive(ws: Workspace) -> None:
    data = write_archive(ws.archives / "plain.tar", bundle_members()).read_bytes()
    half = len(data) // 2
    joined = lzma.compress(data[:half]) + bytes(4) + lzma.compress(data[half:])  # with stream padding between
    (ws.archives / "joined.tar.xz").write_bytes(joined)
    assert ws.unpack(ws.archives / "joined.tar.xz").name == "app"


def test_xz_asking_for_a_huge_dictionary_is_refused(ws: Workspace) -> None:
    xz = bytearray(write_archive(ws.archives / "ok.tar.xz", bundle_members(), "w:xz").read_bytes())
    # First block header: size byte, flags, LZMA2 filter id and property size, then its dictionary size code.
    assert (xz[12], xz[14], xz[15]) == (0x02, 0x21, 0x01)
    xz[16] = 36  # a 1 GiB dictionary; the header's CRC32 follows its 8 bytes
    xz[20:24] = struct.pack("<I", zlib.crc32(bytes(xz[12:20])))
    (ws.archives / "greedy.tar.xz").write_bytes(bytes(xz))
    assert "limit" in ws.refused(FaultCode.CORRUPT_DATA, ws.archives / "greedy.tar.xz").message


def test_wrong_or_malformed_digest(ws: Workspace) -> None:
    archive = write_archive(ws.archives / "app.tar", bundle_members())
    fault = ws.refused(FaultCode.CORRUPT_DATA, archive, digest="sha256:" + "0" * 64)
    assert sha256_of(archive) in fault.message
    ws.refused(FaultCode.INVALID_ARGUMENTS, archive, digest="md5:abc")
    (ws.archives / "app.tar.sha256").write_text("1" * 64 + "  app.tar\n")
    ws.refused(FaultCode.CORRUPT_DATA, archive)
    (ws.archives / "app.tar.sha256").write_text("not a checksum\n")
    ws.refused(FaultCode.CORRUPT_DATA, archive)
    ws.unpack(archive, sibling_digest=False)


def test_missing_config_json(ws: Workspace) -> None:
    members = [m for m in bundle_members() if m.info.name != "app/config.json"]
    fault = ws.refused(FaultCode.CORRUPT_DATA, write_archive(ws.archives / "noconf.tar", members))
    assert "config.json" in fault.message


GARBAGE_CONFIGS: dict[str, tuple[bytes, str]] = {
    "not json": (b"{ociVersion: 1", "not valid JSON"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "not utf-8": (b"\xff\xfe{}", "not valid JSON"),
    "no ociVersion": (json.dumps({"process": {"args": ["x"]}, "root": {"path": "rootfs"}}).encode(), "ociVersion"),
    "no args": (json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"}}).encode(), "process.args"),
    "empty args": (
        json.dumps({"ociVersion": "1.0.2", "process": {"args": []}, "root": {"path": "rootfs"}}).encode(),
        "process.args",
    ),
    "args not strings": (
        json.dumps({"ociVersion": "1.0.2", "process": {"args": [1]}, "root": {"path": "rootfs"}}).encode(),
        "process.args",
    ),
    "no root": (json.dumps({"ociVersion": "1.0.2", "process": {"args": ["x"]}}).encode(), "root.path"),
    "root missing": (
        json.dumps({"ociVersion": "1", "process": {"args": ["x"]}, "root": {"path": "nope"}}).encode(),
        "does not exist",
    ),
    "root absolute": (
        json.dumps({"ociVersion": "1", "process": {"args": ["x"]}, "root": {"path": "/"}}).encode(),
        "relative",
    ),
    "root escapes": (
        json.dumps({"ociVersion": "1", "process": {"args": ["x"]}, "root": {"path": "../app"}}).encode(),
        "inside the bundle",
    ),
    "root is a file": (
        json.dumps({"ociVersion": "1", "process": {"args": ["x"]}, "root": {"path": "rootfs/etc/passwd"}}).encode(),
        "not a directory",
    ),
    "annotations not strings": (
        json.dumps({**oci_config(["x"]), "annotations": {"a": 1}}).encode(),
        "annotations",
    ),
    "rdkPlugins not an object": (json.dumps({**oci_config(["x"]), "rdkPlugins": []}).encode(), "rdkPlugins"),
}


@pytest.mark.parametrize(("content", "complaint"), GARBAGE_CONFIGS.values(), ids=GARBAGE_CONFIGS.keys())
def test_garbage_config_json(ws: Workspace, content: bytes, complaint: str) -> None:
    members = [m for m in bundle_members() if m.info.name != "app/config.json"]
    members.append(file("app/config.json", content))
    fault = ws.refused(FaultCode.CORRUPT_DATA, write_archive(ws.archives / "garbage.tar", members))
    assert complaint in fault.message


def test_bad_manifest(ws: Workspace) -> None:
    members = [*bundle_members(), file("app/manifest.json", b'{"version": 2}')]
    fault = ws.refused(FaultCode.CORRUPT_DATA, write_archive(ws.archives / "manifest.tar", members))
    assert "manifest.json" in fault.message


def test_existing_target_is_not_touched(ws: Workspace) -> None:
    ws.target.mkdir()
    with pytest.raises(Fault) as caught:
        ws.unpack(write_archive(ws.archives / "app.tar", bundle_members()))
    assert caught.value.code is FaultCode.INTERNAL_ERROR
    assert [p.name for p in ws.bundles.iterdir()] == ["du"]


def test_out_of_space_removes_the_staging_directory(ws: Workspace, small_filesystem: Path) -> None:
    members = [*bundle_members(), file("app/rootfs/blob", os.urandom(2 << 20))]
    archive = write_archive(ws.archives / "big.tar", members)
    ws.bundles = small_filesystem
    fault = ws.refused(FaultCode.SYSTEM_RESOURCES_EXCEEDED, archive)
    assert "no space" in fault.message
