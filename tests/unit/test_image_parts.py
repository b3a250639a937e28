"""The image packager's parts: references, platform choice, layer merging, the layer store, config.json."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from dsm_tools.sample_bundle import make_archive, make_bundle

from dsm_tr181.bundlegen.ocilayout import Entry, Layout, file, layer_tar
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.dispatch import is_image_source
from dsm_tr181.packagers.image import ImagePackager, ImagePackagerConfig
from dsm_tr181.packagers.imageconfig import runtime_config
from dsm_tr181.packagers.imagemanifest import select
from dsm_tr181.packagers.imageref import ImageRef, Platform, parse_ref
from dsm_tr181.packagers.imagesources import PEEK_BYTES, _plain_top_names, looks_like_image_tar, tar_top_names
from dsm_tr181.packagers.layers import apply_layer
from dsm_tr181.packagers.layerstore import LayerStore
from dsm_tr181.packagers.worker import Cancel

pytestmark = pytest.mark.unit


# == references and platforms ==============================================================


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("oci://reg.example/app", ImageRef("reg.example", "app", "latest", "")),
        ("oci://127.0.0.1:5000/team/app:1.0", ImageRef("127.0.0.1:5000", "team/app", "1.0", "")),
        ("oci://r:1/app@sha256:" + "a" * 64, ImageRef("r:1", "app", "", "sha256:" + "a" * 64)),
        ("oci://r/app:2.0@sha256:" + "b" * 64, ImageRef("r", "app", "2.0", "sha256:" + "b" * 64)),
    ],
)
def test_references_parse(url: str, expected: ImageRef) -> None:
    assert parse_ref(url) == expected
    assert parse_ref(str(expected)).reference == expected.reference


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("oci://reg.example", FaultCode.INVALID_ARGUMENTS, "expected oci://host"),
        ("oci://user:pw@reg.example/app", FaultCode.INVALID_ARGUMENTS, "credentials"),
        ("oci://reg.example/App", FaultCode.INVALID_ARGUMENTS, "malformed repository"),
        ("oci://reg.example/app:bad tag", FaultCode.INVALID_ARGUMENTS, "malformed tag"),
        ("oci://reg.example/app@sha256:abc", FaultCode.INVALID_ARGUMENTS, "digest"),
        ("docker://reg.example/app", FaultCode.UNSUPPORTED_PROTOCOL, "not an oci://"),
    ],
)
def test_bad_references_are_refused(url: str, code: FaultCode, words: str) -> None:
    with pytest.raises(Fault) as raised:
        parse_ref(url)
    assert raised.value.code is code and words in raised.value.message


def index(*platforms: tuple[str, str]) -> dict[str, object]:
    entries = []
    for n, (architecture, variant) in enumerate(platforms):
        platform = {"os": "linux", "architecture": architecture, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": "m", "digest": f"sha256:{n:064x}", "size": 1, "platform": platform})
    return {"manifests": entries}


def test_platform_choice_prefers_the_exact_variant() -> None:
    document = index(("amd64", ""), ("arm", "v6"), ("arm", "v7"), ("arm64", ""))
    assert select(document, Platform("linux", "arm", "v7"), "x").hex == f"{2:064x}"
    assert select(document, Platform("linux", "arm64", "v8"), "x").hex == f"{3:064x}"  # no variant fits v8
    assert select(index(("arm64", ""), ("arm64", "v8")), Platform("linux", "arm64", "v8"), "x").hex == f"{1:064x}"
    with pytest.raises(Fault) as raised:
        select(document, Platform("linux", "arm", "v5"), "x")
    assert raised.value.code is FaultCode.DU_EE_MISMATCH and "linux/arm/v5" in raised.value.message


def test_platform_configuration_is_checked() -> None:
    assert ImagePackagerConfig(platform="linux/arm/v7").device_platform() == Platform("linux", "arm", "v7")
    with pytest.raises(ValueError, match="os/architecture"):
        ImagePackagerConfig(platform="arm")
    with pytest.raises(ValueError, match="unknown key"):
        ImagePackagerConfig.from_config({"platfrom": "linux/amd64"})


# == layers ==================================================================================


def make_layer(directory: Path, entries: dict[str, str | None]) -> str:
    """A stored layer: name → file content, None → directory, '->target' → symlink."""
    for name, content in entries.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    return str(directory)


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            out[name] = "->" + os.readlink(path)
        elif path.is_dir():
            out[name] = "/"
        else:
            out[name] = path.read_text()
    return out


def test_layers_apply_whiteouts_opaque_dirs_and_replacements(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    lower = make_layer(tmp_path / "l1", {
        "data/a": "a", "data/sub/b": "b", "etc/gone": "x", "etc/kept": "k", "keep/inner": "i",
        "link": "->/etc", "file-to-dir": "f",
    })  # fmt: skip
    upper = make_layer(tmp_path / "l2", {
        "data/.wh..wh..opq": "", "data/c": "c", "etc/.wh.gone": "", "keep": "now a file",
        "link/inside": "not written through the old symlink", "file-to-dir/x": "y",
    })  # fmt: skip
    for layer in (lower, upper):
        apply_layer(layer, str(rootfs), "test", Cancel())
    assert tree(rootfs) == {
        "data": "/", "data/c": "c", "etc": "/", "etc/kept": "k", "file-to-dir": "/", "file-to-dir/x": "y",
        "keep": "now a file", "link": "/", "link/inside": "not written through the old symlink",
    }  # fmt: skip
    assert os.stat(rootfs / "data/c").st_ino == os.stat(tmp_path / "l2/data/c").st_ino  # a hard link


def test_a_malformed_whiteout_is_corrupt_data(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(Fault) as raised:
        apply_layer(make_layer(tmp_path / "l", {".wh...": ""}), str(rootfs), "test", Cancel())
    assert raised.value.code is FaultCode.CORRUPT_DATA


# == the layer store ===========================================================================


def test_store_counts_references_and_collects_unused_layers(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store")
    store.prepare()
    bundles = tmp_path / "bundles"
    for name, data in (("base", "b" * 4000), ("top1", "1" * 1000), ("top2", "2" * 1000)):
        staging = store.staging()
        (staging / "f").write_text(data)
        store.publish(name, staging, len(data))
    one, two = bundles / "1" / "g", bundles / "2" / "g"
    for bundle, top in ((one, "top1"), (two, "top2")):
        store.begin(bundle, ["base", top])
        bundle.mkdir(parents=True)
        store.end(bundle)
    assert store.share_bytes(["base", "top1"]) == 2000 + 1000
    store.release(bundles / "1")  # a DU's directory of bundles
    assert sorted(p.name for p in (tmp_path / "store/layers").iterdir() if p.suffix != ".json") == ["base", "top2"]
    assert store.share_bytes(["base", "top2"]) == 5000
    (two).rmdir()  # gone without release (a crash): its references count for nothing
    store.collect()
    assert list((tmp_path / "store/layers").iterdir()) == []


def test_a_layer_escaping_the_root_is_refused_and_not_stored(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "img")
    bad = [Entry("bin", kind="dir", mode=0o755), Entry("bin/up", kind="symlink", target="../../../etc/passwd")]
    layout.tag(layout.image([bad], {"Cmd": ["/bin/true"]}), "1.0")
    (tmp_path / "bundles").mkdir()
    packager = ImagePackager(ImagePackagerConfig(), tmp_path / "layers")
    with pytest.raises(Fault) as raised:
        asyncio.run(packager.unpack(PackageSource(str(layout.root)), tmp_path / "bundles" / "g", lambda *_: None))
    assert raised.value.code is FaultCode.CORRUPT_DATA and "leaves the bundle" in raised.value.message
    assert os.listdir(tmp_path / "bundles") == [] and os.listdir(tmp_path / "layers/layers") == []


# == config.json =================================================================================


def test_runtime_config_follows_the_image_config(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nweb:x:33:34::/:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\nlog:x:4:\n")
    image = {
        "architecture": "arm64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/srv/app"], "Cmd": ["--port", "80"], "Env": ["A=1"], "WorkingDir": "/srv",
            "User": "web:log", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/var/cache": {}},
            "Labels": {"org.opencontainers.image.title": "from-label", "tier": "edge"}, "StopSignal": "SIGINT",
        },
    }  # fmt: skip
    spec = runtime_config(image, {"org.opencontainers.image.title": "from-manifest"}, str(rootfs), "t")
    process = spec["process"]
    assert process["args"] == ["/srv/app", "--port", "80"] and process["cwd"] == "/srv"
    assert process["env"][0].startswith("PATH=") and process["env"][1] == "A=1"
    assert process["user"] == {"uid": 33, "gid": 4}
    assert process["noNewPrivileges"] is True
    assert {m["destination"]: m["type"] for m in spec["mounts"]}["/var/cache"] == "tmpfs"
    assert spec["annotations"] == {
        "org.opencontainers.image.title": "from-manifest", "tier": "edge",
        "org.opencontainers.image.exposedPorts": "53/udp,80/tcp", "org.opencontainers.image.stopSignal": "SIGINT",
        "org.opencontainers.image.os": "linux", "org.opencontainers.image.architecture": "arm64",
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    assert json.loads(json.dumps(spec)) == spec


def test_runtime_config_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").symlink_to("/etc/passwd")  # the host's: never read
    with pytest.raises(Fault, match="neither Entrypoint nor Cmd"):
        runtime_config({"config": {}}, {}, str(rootfs), "t")
    with pytest.raises(Fault, match="user 'root' is not in its /etc/passwd"):
        runtime_config({"config": {"Cmd": ["x"], "User": "root"}}, {}, str(rootfs), "t")
    assert runtime_config({"config": {"Cmd": ["x"], "User": "7:8"}}, {}, str(rootfs), "t")["process"]["user"] == {
        "uid": 7, "gid": 8,
    }  # fmt: skip


# == which packager ================================================================================


def image_source(url: str) -> bool:
    return is_image_source(PackageSource(url), ImagePackagerConfig(connect_timeout=2).http())


def test_sources_go_to_the_image_packager_by_scheme_or_content(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image([[file("x", "y")]], {"Cmd": ["/x"]}), "1.0")
    bundle_tar = make_archive(make_bundle(tmp_path / "b" / "hello"), tmp_path / "hello.tar", flat=True)
    assert image_source("oci://r/app:1")
    assert image_source(str(layout.root)) and image_source(layout.root.as_uri())
    assert not image_source(str(bundle_tar))
    assert not image_source("https://127.0.0.1:1/image.tar")  # unreachable: the tar packager says why
    assert not image_source(str(tmp_path / "missing.tar"))


def tar_start(names: list[str], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
            tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()[:PEEK_BYTES]


@pytest.mark.parametrize(
    ("names", "image"),
    [
        (["./", "./oci-layout", "./index.json"], True),
        (["blobs/", "blobs/sha256/"], True),
        (["index.json"], True),
        (["a" * 64 + "/", "a" * 64 + "/layer.tar"], True),  # old docker save
        (["b" * 64 + ".json"], True),
        (["manifest.json"], True),
        (["blobs/sha256/" + "é" * 120], True),  # a pax header first
        (["./", "./config.json", "./rootfs/"], False),  # flat DU
        (["hello/", "hello/config.json"], False),  # DU in a top folder
        (["rootfs/"], False),
    ],
)
def test_the_start_of_a_remote_tar_tells_an_image(names: list[str], image: bool) -> None:
    assert looks_like_image_tar(tar_start(names)) is image
    assert looks_like_image_tar(b"\x1f\x8b" + bytes(600)) is False  # compressed: a DU archive


def _reference_top_names(path: Path) -> set[str]:
    """What tarfile itself finds: top-level regular files, or none when it cannot read the archive."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = [m.name for m in tar.getmembers() if m.isreg()]
    except tarfile.TarError:
        return set()
    names = {"/".join(part for part in name.split("/") if part not in ("", ".")) for name in members}
    return {name for name in names if "/" not in name}


def _sample_tar(path: Path, tar_format: int, names: list[str], fractional_mtime: bool) -> Path:
    with tarfile.open(path, "w", format=tar_format) as tar:
        for index, name in enumerate(names):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            data = b"" if info.isdir() else os.urandom(300 * index)
            info.size = len(data)
            info.mtime = 1_700_000_000.5 if fractional_mtime else 1_700_000_000  # pax headers for every member
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("fractional_mtime", [False, True])
def test_top_names_of_a_local_tar_read_from_its_headers_alone_match_tarfile(
    tmp_path: Path, tar_format: int, fractional_mtime: bool
) -> None:
    names = ["./", "./manifest.json", "oci-layout", "rootfs/", "rootfs/bin", "config.json", "d" * 80 + "/" + "e" * 80]
    expected = {"manifest.json", "oci-layout", "config.json"}
    if tar_format != tarfile.USTAR_FORMAT:
        names.append("m" * 120 + ".json")  # a pax header or a GNU long name
        expected.add("m" * 120 + ".json")
    path = _sample_tar(tmp_path / "a.tar", tar_format, names, fractional_mtime)
    with path.open("rb") as file:
        assert _plain_top_names(file.fileno()) == expected == _reference_top_names(path)
    data = path.read_bytes()
    # Truncated or corrupt anywhere: the same answer as tarfile's, by the fast reading or through tarfile.
    variants = [data[:cut] for cut in (0, 100, 512, 1024, 1536, len(data) // 2, len(data) - 1024)]
    variants += [data[:at] + bytes([data[at] ^ 0x41]) + data[at + 1 :] for at in (0, 124, 150, 156, 600, 1100, 1700)]
    for index, variant in enumerate(variants):
        damaged = tmp_path / f"damaged{index}.tar"
        damaged.write_bytes(variant)
        with damaged.open("rb") as file:
            assert tar_top_names(file) == _reference_top_names(damaged), index


# == zstd layers ====================================================================================


def test_zstd_layers_are_unpacked_and_corrupt_ones_refused(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    layout = Layout(tmp_path / "img")
    raw = layer_tar([file("hello.txt", "zstd says hi")])
    good = zstandard.ZstdCompressor().compress(raw)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    layer = layout.blob(good, "application/vnd.oci.image.layer.v1.tar+zstd")
    layout.tag(layout.image([(layer, diff_id)], {"Cmd": ["/x"]}), "1.0")
    bad_layout = Layout(tmp_path / "bad")
    broken = good[: len(good) // 2]  # a truncated frame
    bad_layer = bad_layout.blob(broken, "application/vnd.oci.image.layer.v1.tar+zstd")
    bad_layout.tag(bad_layout.image([(bad_layer, diff_id)], {"Cmd": ["/x"]}), "1.0")
    (tmp_path / "bundles").mkdir()
    packager = ImagePackager(ImagePackagerConfig(), tmp_path / "layers")

    info = asyncio.run(packager.unpack(PackageSource(str(layout.root)), tmp_path / "bundles" / "g", lambda *_: None))

    assert (info.path / "rootfs" / "hello.txt").read_text() == "zstd says hi"
    with pytest.raises(Fault) as raised:
        asyncio.run(packager.unpack(PackageSource(str(bad_layout.root)), tmp_path / "bundles" / "h", lambda *_: None))
    assert raised.value.code is FaultCode.CORRUPT_DATA, raised.value
    assert os.listdir(tmp_path / "bundles") == ["g"]
