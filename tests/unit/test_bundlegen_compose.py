"""dsm-bundle compose: OSv-style module manifests, dependency resolution, run configurations, outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.bundlegen.compose import Request, compose, load_map, manifest_entries, resolve
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.generate import Source, generate
from dsm_tr181.bundlegen.processor import Options
from dsm_tr181.bundlegen.template import load_template
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers.dispatch import is_image_source
from dsm_tr181.packagers.image import ImagePackagerConfig

pytestmark = pytest.mark.unit


def module(root: Path, name: str, manifest: str = "", **config: Any) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    if manifest:
        (directory / "usr.manifest").write_text(manifest)
    if config:
        (directory / "module.json").write_text(json.dumps(config))
    return directory


def modules_map(root: Path, names: list[str], **extra: Any) -> Path:
    path = root / "modules.json"
    path.write_text(json.dumps({name: {"type": "direct-dir", "path": name} for name in names} | extra))
    return path


def archive_of(out: Path) -> dict[str, Any]:
    with tarfile.open(out) as tar:
        member = tar.extractfile("config.json")
        assert member is not None
        return {"config": json.load(member), "names": tar.getnames(),
                "links": {m.name: m.linkname for m in tar.getmembers() if m.issym()},
                "files": {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}}  # type: ignore[union-attr]  # fmt: skip


# == manifests =================================================================================


def test_manifest_lines_wildcards_ampersand_links_and_variables(tmp_path: Path) -> None:
    app = module(tmp_path, "app", "\n".join([
        "# a comment", "[manifest]", "",
        "/etc/app.conf: ${MODULE_DIR}/conf/app.conf",
        "/usr/share/app/**: ${MODULE_DIR}/share/**",
        "/usr/lib/&/libapp.so.1: ${MODULE_DIR}/build/&",
        "/bin/app-link: ->/usr/bin/app",
        "/etc/flavour: ${MODULE_DIR}/${FLAVOUR}.txt",
        "/lib/keep-link: !${MODULE_DIR}/conf/link",
    ]) + "\n")  # fmt: skip
    for path, text in {"conf/app.conf": "x=1", "share/a.txt": "a", "share/sub/b.txt": "b",
                       "build/libapp.so.1": "ELF", "blue.txt": "blue"}.items():  # fmt: skip
        (app / path).parent.mkdir(parents=True, exist_ok=True)
        (app / path).write_text(text)
    (app / "conf" / "link").symlink_to("app.conf")
    [loaded] = resolve(["app"], load_map(modules_map(tmp_path, ["app"])), tmp_path)

    pairs = manifest_entries(loaded, {"FLAVOUR": "blue"})

    assert pairs == [
        ("/etc/app.conf", f"{app}/conf/app.conf"),
        ("/usr/share/app/a.txt", f"{app}/share/a.txt"),
        ("/usr/share/app/sub/b.txt", f"{app}/share/sub/b.txt"),
        ("/usr/lib/libapp.so.1", f"{app}/build/libapp.so.1"),
        ("/bin/app-link", "->/usr/bin/app"),
        ("/etc/flavour", f"{app}/blue.txt"),
        ("/lib/keep-link", f"!{app}/conf/link"),
    ]
    with pytest.raises(BundleError, match=r"undefined variable \$\{FLAVOUR\}"):
        manifest_entries(loaded, {})


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("/etc/passwd: /etc/passwd", "outside the module directory"),
        ("/x: ${MODULE_DIR}/../other/file", "outside the module directory"),
        ("etc/relative: ${MODULE_DIR}/f", "expected '/guest/path: host/path'"),
        ("/no-separator", "expected '/guest/path: host/path'"),
    ],
)
def test_manifest_lines_that_are_refused(tmp_path: Path, line: str, words: str) -> None:
    module(tmp_path, "app", line + "\n")
    [loaded] = resolve(["app"], load_map(modules_map(tmp_path, ["app"])), tmp_path)
    with pytest.raises(BundleError, match=words):
        manifest_entries(loaded, {})


# == dependencies ==============================================================================


def test_dependencies_come_first_and_once(tmp_path: Path) -> None:
    module(tmp_path, "app", requires=["net", "base"])
    module(tmp_path, "net", requires=["base"])
    module(tmp_path, "base")
    module(tmp_path, "tools", requires=["base"])
    order = resolve(["app", "tools"], load_map(modules_map(tmp_path, ["app", "net", "base", "tools"])), tmp_path)
    assert [m.name for m in order] == ["base", "net", "app", "tools"]


def test_cycles_and_missing_modules_are_named(tmp_path: Path) -> None:
    module(tmp_path, "a", requires=["b"])
    module(tmp_path, "b", requires=["c"])
    module(tmp_path, "c", requires=["a"])
    module(tmp_path, "d", requires=["nowhere"])
    mapping = load_map(modules_map(tmp_path, ["a", "b", "c", "d"]))
    with pytest.raises(BundleError, match="dependency cycle: a -> b -> c -> a"):
        resolve(["a"], mapping, tmp_path)
    with pytest.raises(BundleError, match=r"no module named 'nowhere' in the modules map \(required by d\)"):
        resolve(["d"], mapping, tmp_path)


def test_map_includes_and_tar_and_git_modules(tmp_path: Path) -> None:
    packed = module(tmp_path / "src", "packed", "/packed.txt: ${MODULE_DIR}/p.txt\n")
    (packed / "p.txt").write_text("from a tar")
    with tarfile.open(tmp_path / "packed.tar", "w") as tar:
        tar.add(packed, arcname=".")
    repo = module(tmp_path / "src", "cloned", "/cloned.txt: ${MODULE_DIR}/c.txt\n", requires=["packed"])
    (repo / "c.txt").write_text("from git")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    if shutil.which("git") is None:
        pytest.skip("needs git")
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "m"]):
        subprocess.run([*git, *command], check=True)
    (tmp_path / "more.json").write_text(json.dumps({"packed": {"type": "tar", "path": "packed.tar"}}))
    mapping_file = tmp_path / "modules.json"
    mapping_file.write_text(json.dumps({"include": ["more.json"],
                                        "cloned": {"type": "git", "url": str(repo), "branch": "main"}}))  # fmt: skip
    out = tmp_path / "out.tar.gz"
    (repo / "module.json").write_text(json.dumps({"requires": ["packed"], "run": {"default": {"args": ["/x"]}}}))
    subprocess.run([*git, "commit", "-qam", "run"], check=True)

    compose(Request(["cloned"], mapping_file, out))

    files = archive_of(out)["files"]
    assert files["rootfs/packed.txt"] == b"from a tar" and files["rootfs/cloned.txt"] == b"from git"


# == run configurations and outputs ==============================================================


def app_modules(tmp_path: Path) -> Path:
    base = module(tmp_path, "base", "/etc/base.conf: ${MODULE_DIR}/base.conf\n", resources={"ram": "32M"})
    (base / "base.conf").write_text("base")
    app = module(tmp_path, "app", "/app/run.sh: ${MODULE_DIR}/run.sh\n/etc/base.conf: ${MODULE_DIR}/mine.conf\n",
                 requires=["base"], default_run="default",
                 run={"default": {"args": ["/bin/sh", "/app/run.sh"], "env": ["MODE=normal"]},
                      "shell": {"args": ["/bin/sh"]}})  # fmt: skip
    (app / "run.sh").write_text("echo composed\n")
    (app / "mine.conf").write_text("the app's own")
    return modules_map(tmp_path, ["base", "app"])


def test_compose_lays_modules_in_order_and_takes_the_run_configuration(tmp_path: Path) -> None:
    mapping = app_modules(tmp_path)
    out = tmp_path / "app.tar.gz"
    compose(Request(["app"], mapping, out, name="my-app", version="1.2"))
    result = archive_of(out)
    assert result["files"]["rootfs/etc/base.conf"] == b"the app's own"  # a later module wins
    config = result["config"]
    assert config["process"]["args"] == ["/bin/sh", "/app/run.sh"] and "MODE=normal" in config["process"]["env"]
    assert config["linux"]["resources"] == {"memory": {"limit": 32 << 20}}
    assert config["annotations"]["org.opencontainers.image.title"] == "my-app"
    shell = tmp_path / "shell.tar.gz"
    compose(Request(["app.shell"], mapping, shell))
    assert archive_of(shell)["config"]["process"]["args"] == ["/bin/sh"]


def test_run_configuration_errors(tmp_path: Path) -> None:
    mapping = app_modules(tmp_path)
    with pytest.raises(BundleError, match=r"module app has no run configuration 'debug' \(it has: default, shell\)"):
        compose(Request(["app.debug"], mapping, tmp_path / "x.tar.gz"))
    with pytest.raises(BundleError, match="more than one run configuration chosen"):
        compose(Request(["app.shell", "app.default"], mapping, tmp_path / "x.tar.gz"))
    with pytest.raises(BundleError, match="no run configuration"):
        compose(Request(["base"], mapping, tmp_path / "x.tar.gz"))
    assert sorted(os.listdir(tmp_path)) == ["app", "base", "modules.json"]  # nothing written


def test_compose_writes_an_oci_layout_the_image_packager_reads(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    compose(Request(["app"], app_modules(tmp_path), out, oci=True))
    assert is_image_source(PackageSource(str(out)), ImagePackagerConfig().http())
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    assert config["config"]["Cmd"] == ["/bin/sh", "/app/run.sh"]


def test_a_composed_oci_layout_goes_through_the_generator(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    compose(Request(["app"], app_modules(tmp_path), layout, oci=True))
    data = Path(__file__).parent / "data" / "bundlegen"
    metadata = json.loads((data / "weather.json").read_text()) | {"graphics": False}
    out = tmp_path / "generated.tar.gz"

    generate(Source(str(layout)), load_template(data, "testplat"), metadata, Options("dobby"), out,
             api_version="5", release_type="prod")  # fmt: skip

    result = archive_of(out)
    assert result["config"]["process"]["args"] == ["/usr/libexec/DobbyInit", "/bin/sh", "/app/run.sh"]
    assert result["files"]["rootfs/app/run.sh"] == b"echo composed\n"
