"""dsm-bundle generate: a platform template applied to an image, field family by field family,
the compatibility key, and the faults (each leaving no output)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.bundlegen.cli import main as dsm_bundle
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.generate import Source, generate
from dsm_tr181.bundlegen.libraries import LibraryMatcher, version_definitions
from dsm_tr181.bundlegen.processor import Options, parse_size
from dsm_tr181.bundlegen.template import Template, load_template
from dsm_tr181.sample_image import Entry, Layout, file

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "bundlegen"
APP_ID = "com.example.weather"
BASE_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
    "LANG=C",
    "HOME=/home/app",
]


def image_layout(root: Path, *, with_metadata: bool = False) -> Path:
    layout = Layout(root)
    entries = [
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        file("etc/group", "root:x:0:\napp:x:1000:\n"),
        file("bin/app", "#!/bin/sh\n", mode=0o755),
        file("usr/lib/libdrm.so.2", "image's libdrm"),
        file("usr/lib/libEGL.so.1.0", "image's libEGL"),
        Entry("usr/lib/libEGL.so.1", kind="symlink", target="libEGL.so.1.0"),
        Entry("home/app", kind="dir", mode=0o755),
    ]
    if with_metadata:
        entries.append(file("appmetadata.json", (DATA / "weather.json").read_text()))
    config = {"Entrypoint": ["/bin/app"], "Cmd": ["--city", "Paris London"], "Env": ["LANG=C"], "User": "app",
              "WorkingDir": "/home/app"}  # fmt: skip
    notes = {"org.opencontainers.image.vendor": "example.com", "org.opencontainers.image.version": "9.9"}
    layout.tag(layout.image([entries], config, annotations=notes), "1.0")
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_layout(tmp_path_factory.mktemp("image") / "layout")


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(DATA, "testplat")


def app() -> dict[str, Any]:
    return json.loads((DATA / "weather.json").read_text())


def run(image: Path, template: Template, out_dir: Path, runtime: str, app_metadata: dict[str, Any] | None = None,
        *, from_image: bool = False) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Generate; the archive's config.json and member names."""
    out = out_dir / f"{runtime}.tar.gz"
    metadata = None if from_image else app_metadata or app()
    generate(Source(str(image)), template, metadata, Options(runtime), out, api_version="5", release_type="prod")
    with tarfile.open(out) as tar:
        member = tar.extractfile("config.json")
        assert member is not None
        return json.load(member), tar.getnames()


@pytest.fixture(scope="module")
def dobby(
    image: Path, template: Template, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], list[str]]:
    return run(image, template, tmp_path_factory.mktemp("out"), "dobby")


@pytest.fixture(scope="module")
def runc(image: Path, template: Template, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(image, template, tmp_path_factory.mktemp("out"), "runc")[0]


def mounts(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in config["mounts"]}


def bind(source: str, destination: str, options: list[str] | None = None) -> dict[str, Any]:
    return {"source": source, "destination": destination, "type": "bind",
            "options": options or ["rbind", "nosuid", "nodev", "ro"]}  # fmt: skip


# == field families =====================================================================


def test_archive_is_flat_with_config_and_rootfs(dobby: tuple[dict[str, Any], list[str]]) -> None:
    _, names = dobby
    assert names[0] == "config.json" and "rootfs" in names and "rootfs/bin/app" in names
    assert not [name for name in names if name not in ("config.json", "rootfs") and not name.startswith("rootfs/")]


def test_process_dobby_init_args_env_and_rlimits(dobby: tuple[dict[str, Any], list[str]], runc: dict[str, Any]) -> None:
    process = dobby[0]["process"]
    assert process["args"] == ["/usr/libexec/DobbyInit", "/bin/app", "--city", "Paris", "London"]
    assert process["env"] == [*BASE_ENV, "PLATFORM=testplat", "XDG_RUNTIME_DIR=/tmp", "WAYLAND_DISPLAY=wayland-0"]
    assert process["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}, {"type": "RLIMIT_NPROC", "hard": 300, "soft": 300},
    ]  # fmt: skip
    assert process["user"] == {"uid": 1000, "gid": 1000} and process["cwd"] == "/home/app"
    assert process["terminal"] is True and process["apparmorProfile"] == "dac-app"
    assert runc["process"]["args"] == ["/bin/app", "--city", "Paris London"]
    assert "/usr/libexec/DobbyInit" not in mounts(runc)


def test_oci_version_by_runtime(dobby: tuple[dict[str, Any], list[str]], runc: dict[str, Any]) -> None:
    assert dobby[0]["ociVersion"] == "1.0.2-dobby" and runc["ociVersion"] == "1.0.2"
    assert "rdkPlugins" in dobby[0] and "rdkPlugins" not in runc


def test_mounts_platform_app_gpu_libraries_and_plugins(dobby: tuple[dict[str, Any], list[str]]) -> None:
    config, _ = dobby
    umoci = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/etc/resolv.conf"]
    assert [m["destination"] for m in config["mounts"]] == [
        *umoci,
        "/usr/libexec/DobbyInit",  # process
        "/etc/ssl/certs", "/run/app",  # platform, then app mounts
        "/usr/share/fonts",  # gpu extraMounts (X-mount.no skipped, the optional one moved below)
        "/usr/lib/libEGL.so.1", "/usr/lib/libdrm.so.2", "/lib/libc.so.6", "/lib/libm.so.6",  # gfx lib, its deps
        "/usr/lib/libGLESv2.so.2",
        "/tmp/westeros",
        "/usr/lib/libnl-3.so.200",  # Dobby plugin dependency
        "/usr/lib/plugins/dobby",  # plugin directory
        "/home/temp",  # temp storage
    ]  # fmt: skip
    by_path = mounts(config)
    assert by_path["/run/app"] == bind("/run/app/" + APP_ID, "/run/app", ["rbind", "rw"])
    assert by_path["/usr/lib/libdrm.so.2"] == bind("/usr/lib/libdrm.so.2", "/usr/lib/libdrm.so.2")
    assert by_path["/tmp/westeros"] == bind("/run/westeros", "/tmp/westeros", ["rbind", "nosuid", "nodev"])


def test_host_libraries_replace_the_images_copies(dobby: tuple[dict[str, Any], list[str]]) -> None:
    _, names = dobby
    for removed in ("rootfs/usr/lib/libdrm.so.2", "rootfs/usr/lib/libEGL.so.1", "rootfs/usr/lib/libEGL.so.1.0"):
        assert removed not in names


def test_devices_and_resources(dobby: tuple[dict[str, Any], list[str]], runc: dict[str, Any]) -> None:
    linux = dobby[0]["linux"]
    assert linux["devices"] == [
        {"path": "/dev/dri/card0", "type": "c", "major": 226, "minor": 0},
        {"path": "/dev/mali0", "type": "c", "major": 10, "minor": 60},
    ]
    assert linux["resources"] == {
        "devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 226, "minor": 0, "access": "rw"},
            {"allow": True, "type": "c", "major": 10, "minor": 60, "access": "rw"},
        ],
        "memory": {"limit": 128 << 20},
    }
    assert runc["linux"]["resources"]["memory"] == {"limit": 128 << 20}
    assert dobby[0]["rdkPlugins"]["devicemapper"] == {"required": True, "data": {"devices": ["/dev/mali0"]}}


def test_users_capabilities_hostname_root_and_seccomp(dobby: tuple[dict[str, Any], list[str]]) -> None:
    config, _ = dobby
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 30000, "size": 2000}]
    assert config["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 30000, "size": 2000}]
    assert {"type": "user"} in config["linux"]["namespaces"]
    caps = ["CAP_KILL", "CAP_NET_RAW", "CAP_SETGID"]  # platform set + app's add - app's drop
    assert config["process"]["capabilities"] == {key: caps for key in ("bounding", "effective", "inheritable",
                                                                        "permitted", "ambient")}  # fmt: skip
    assert config["hostname"] == APP_ID
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["linux"]["seccomp"]["syscalls"] == [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]


def test_network_storage_logging_and_other_plugins(dobby: tuple[dict[str, Any], list[str]]) -> None:
    config, names = dobby
    plugins = config["rdkPlugins"]
    assert plugins["networking"] == {"required": True, "data": {"type": "nat", "ipv4": True}}
    image = hashlib.sha256(b"/home/private").hexdigest() + ".img"
    assert plugins["storage"] == {
        "required": True,
        "data": {
            "loopback": [{"destination": "/home/private", "flags": 14, "fstype": "ext4",
                          "source": f"/opt/dac/data/{APP_ID}/{image}", "imgsize": 16 << 20}],
            "dynamic": [{"source": f"/tmp/{APP_ID}", "destination": "/tmp/rialto-0", "type": "bind",
                         "options": ["rbind", "rw"]}],
        },
    }  # fmt: skip
    assert mounts(config)["/home/temp"] == {"destination": "/home/temp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", f"size={8 << 20}", "uid=1000", "gid=1000"]}  # fmt: skip
    assert plugins["logging"] == {"required": True, "data": {"sink": "file", "fileOptions": {
        "path": f"/opt/logs/{APP_ID}.log", "limit": 65536}}}  # fmt: skip
    assert plugins["ipc"] == {"required": True, "data": {"session": "/tmp/dbus-session"}}
    assert plugins["thunder"] == {
        "required": True,
        "dependsOn": ["networking"],
        "data": {"bearerUrl": "http://127.0.0.1"},
    }
    assert plugins["gpu"] == {"required": True, "data": {"memory": 64 << 20}}
    assert {"rootfs/etc/hosts", "rootfs/etc/nsswitch.conf", "rootfs/home/private", "rootfs/home/temp"} <= set(names)


def test_runc_target_has_no_dobby_parts(runc: dict[str, Any]) -> None:
    by_path = mounts(runc)
    assert "/home/temp" not in by_path and "/usr/lib/plugins/dobby" not in by_path
    assert by_path["/tmp/rialto-0"]["options"] == ["rbind", "rw", "X-dobby.optional"]  # as BundleGen leaves it


def test_annotations_name_the_app_platform_and_key(dobby: tuple[dict[str, Any], list[str]], template: Template) -> None:
    notes = dobby[0]["annotations"]
    assert notes["org.opencontainers.image.title"] == APP_ID
    assert notes["org.opencontainers.image.version"] == "2.0.1"
    assert notes["org.opencontainers.image.vendor"] == "example.com"
    assert notes["org.opencontainers.image.description"] == "weather app"
    assert notes["com.rdkcentral.dac.platform"] == "testplat"
    assert notes["com.rdkcentral.dac.compatibilityKey"] == template.compatibility_key("5", "prod")
    assert notes["run.oci.hooks.stdout"] == "/dev/stdout"


def test_app_metadata_from_the_image_is_used_and_removed(template: Template, tmp_path: Path) -> None:
    image = image_layout(tmp_path / "with-metadata", with_metadata=True)
    config, names = run(image, template, tmp_path, "dobby", from_image=True)
    assert config["hostname"] == APP_ID and "rootfs/appmetadata.json" not in names


def test_compliant_config_gets_dobby_hooks(image: Path, template: Template, tmp_path: Path) -> None:
    platform = copy.deepcopy(template.platform)
    platform["dobby"] |= {"generateCompliantConfig": True, "hookLauncherParametersPath": "/opt/dac/{id}"}
    compliant = Template("testplat", platform, template.platform_bytes, template.libs_bytes)
    config, _ = run(image, compliant, tmp_path, "dobby")
    assert config["ociVersion"] == "1.0.2" and "rdkPlugins" in config
    assert config["hooks"]["poststop"] == [{"path": "/usr/bin/DobbyPluginLauncher", "args": [
        "DobbyPluginLauncher", "-h", "poststop", "-c", f"/opt/dac/{APP_ID}/config.json"]}]  # fmt: skip


# == the compatibility key ==============================================================


def test_compatibility_key_is_api_version_sha1_of_both_files_and_release_type(
    template: Template, tmp_path: Path
) -> None:
    both = (DATA / "testplat.json").read_bytes() + (DATA / "testplat_libs.json").read_bytes()
    expected = f"5-{hashlib.sha1(both).hexdigest()}-prod"
    assert template.compatibility_key("5", "prod") == expected
    archive = tmp_path / f"testplat_{expected}_dac_configs.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("testplat.json", "testplat_libs.json"):
            tar.add(DATA / name, arcname=f"configs/{name}")
    assert load_template(archive, "testplat").compatibility_key("5", "prod") == expected
    changed = tmp_path / "changed"
    shutil.copytree(DATA, changed)
    (changed / "testplat_libs.json").write_text((DATA / "testplat_libs.json").read_text() + " ")
    assert load_template(changed, "testplat").compatibility_key("5", "prod") != expected


def test_key_command_prints_it(capsys: pytest.CaptureFixture[str], template: Template) -> None:
    assert dsm_bundle(["key", "--template", str(DATA), "--platform", "testplat", "--api-version", "5",
                       "--release-type", "prod"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == template.compatibility_key("5", "prod")


# == faults: a clear error, no output =========================================================


def broken_template(tmp_path: Path, platform: str | None, libs: str | None) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    if platform is not None:
        (directory / "testplat.json").write_text(platform)
    if libs is not None:
        (directory / "testplat_libs.json").write_text(libs)
    return directory


@pytest.mark.parametrize(
    ("platform", "libs", "words"),
    [
        ("{not json", '{"libs": []}', "not valid JSON"),
        ("[]", '{"libs": []}', "not a JSON object"),
        ('{"platformName": "x"}', '{"libs": []}', "missing os, arch, rdk, hardware, network"),
        (None, '{"libs": []}', "no platform template testplat.json"),
        ((DATA / "testplat.json").read_text(), None, "the libs file testplat_libs.json is missing"),
        ((DATA / "testplat.json").read_text(), '{"libs": [{"name": "/x"}]}', "needs apiversions and deps"),
    ],
)
def test_malformed_templates_are_refused(tmp_path: Path, platform: str | None, libs: str | None, words: str) -> None:
    with pytest.raises(BundleError, match=words):
        load_template(broken_template(tmp_path, platform, libs), "testplat")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"features": ["com.example.Missing"]}, "features the platform does not support: com.example.Missing"),
        ({"resources": {"ram": "1G"}}, "needs 1G of RAM, the platform gives at most 256M"),
        ({"network": {"type": "bridged"}}, "needs bridged networking"),
        ({"storage": {"persistent": [{"size": "100M", "path": "/p"}]}}, "persistent storage of 100M exceeds"),
        ({"graphics": "yes"}, "graphics must be true or false"),
        ({"resources": {}}, "resources.ram is required"),
    ],
)
def test_apps_the_platform_cannot_run_are_refused_with_no_output(
    image: Path, template: Template, tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    with pytest.raises(BundleError, match=words):
        run(image, template, tmp_path, "dobby", app_metadata=app() | change)
    assert list(tmp_path.iterdir()) == []


def test_graphics_app_on_a_platform_without_graphics_is_refused(
    image: Path, template: Template, tmp_path: Path
) -> None:
    platform = copy.deepcopy(template.platform)
    platform["hardware"]["graphics"] = False
    headless = Template("testplat", platform, b"", b"")
    with pytest.raises(BundleError, match="needs graphics"):
        run(image, headless, tmp_path, "dobby")
    assert list(tmp_path.iterdir()) == []


def test_unknown_runtime_and_bad_image_are_errors(image: Path, template: Template, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    common = ["--template", str(DATA), "--platform", "testplat", "--api-version", "5", "--release-type", "prod"]
    with pytest.raises(BundleError, match="unknown target runtime 'lxc'"):
        Options("lxc")
    assert dsm_bundle(["generate", str(tmp_path / "missing"), *common, "-o", str(tmp_path / "x.tar.gz"),
                       "--app-metadata", str(DATA / "weather.json")]) == 1  # fmt: skip
    assert "dsm-bundle: " in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_symlinked_etc_in_the_image_is_not_written_through(template: Template, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "evil")
    entries = [Entry("etc", kind="symlink", target="/etc"), file("bin/app", "x", mode=0o755)]
    layout.tag(layout.image([entries], {"Cmd": ["/bin/app"]}), "1.0")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match="/etc in the image is not a directory"):
        run(tmp_path / "evil", template, out, "dobby")
    assert list(out.iterdir()) == []


def test_sizes_parse_as_binary_units() -> None:
    assert [parse_size(s) for s in ("60M", "1G", "512K", "1.5M", "100", "8MiB")] == [
        60 << 20, 1 << 30, 512 << 10, 3 << 19, 100, 8 << 20,
    ]  # fmt: skip
    with pytest.raises(BundleError):
        parse_size("lots")


def test_version_definitions_read_as_bundlegen_reads_readelf(tmp_path: Path) -> None:
    readelf = shutil.which("readelf")
    libc = next((p for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib/aarch64-linux-gnu/libc.so.6"))
                 if p.exists()), None)  # fmt: skip
    if readelf is None or libc is None:
        pytest.skip("needs readelf (binutils) and a glibc")
    output = subprocess.run([readelf, "-V", str(libc)], capture_output=True, text=True, check=True).stdout
    section = output.split("Version definition section", 1)[1].split("Version needs section", 1)[0]
    expected = [
        line.split("Name: ", 1)[1] for line in section.splitlines() if line.startswith("  0x") and "Name: " in line
    ]
    assert version_definitions(libc.read_bytes()) == expected and len(expected) > 10
    assert version_definitions(b"not an ELF file") == []


@pytest.mark.parametrize(("host_versions", "taken"), [("all", "host"), ("fewer", "image")])
def test_normal_mode_compares_version_definitions(tmp_path: Path, host_versions: str, taken: str) -> None:
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.exists():
        pytest.skip("needs an x86-64 glibc to stand in for the image's")
    rootfs = tmp_path / "rootfs"
    (rootfs / "lib").mkdir(parents=True)
    shutil.copy(libc, rootfs / "lib" / "libc.so.6")
    image_versions = version_definitions(libc.read_bytes())
    versions = [*image_versions, "GLIBC_9.9"] if host_versions == "all" else image_versions[:3]
    platform = {"libs": [{"name": "/lib/libc.so.6", "apiversions": versions, "deps": []}]}
    mounted: list[tuple[str, str]] = []
    matcher = LibraryMatcher(platform, str(rootfs), lambda s, d: mounted.append((s, d)), "normal", True)

    matcher.mount_or_use_image("/lib/libc.so.6", "/lib/libc.so.6")

    if taken == "host":
        assert mounted == [("/lib/libc.so.6", "/lib/libc.so.6")] and not (rootfs / "lib/libc.so.6").exists()
    else:
        assert mounted == [] and (rootfs / "lib/libc.so.6").exists()
