"""integration/ and rpi/ hold working files: the systemd unit, the example configs, the
Yocto recipe and the Raspberry Pi setup script are checked by the tools that consume them."""

import configparser
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dsm_tr181.buses.dbus import DbusConfig
from dsm_tr181.buses.rbus import RbusConfig
from dsm_tr181.config import load_config
from dsm_tr181.packagers.image import ImagePackagerConfig
from dsm_tr181.packagers.tar import TarPackagerConfig
from dsm_tr181.runtimes.dobby import DobbyRuntimeConfig
from dsm_tr181.runtimes.oci import OciRuntimeConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "integration"
RUNTIME_CONFIGS = {"runc": OciRuntimeConfig, "crun": OciRuntimeConfig, "dobby": DobbyRuntimeConfig}
BUS_CONFIGS = {"rbus": RbusConfig, "dbus": DbusConfig}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    dsm = Path(sys.executable).with_name("dsm")
    unit = (INTEGRATION / "dsm.service").read_text().replace("ExecStart=/usr/bin/dsm", f"ExecStart={dsm}")
    (tmp_path / "dsm.service").write_text(unit)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "dsm.service")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read_string(unit)
    assert service["Service"]["Type"] == "notify"
    assert service["Service"]["KillMode"] == "process"  # containers outlive a daemon restart
    assert "DSM_CONFIG_FILE=/etc/dsm/dsm.toml" in service["Service"]["Environment"]


@pytest.mark.parametrize("name", ["dsm.toml", "dsm-rdkb.toml"])
def test_example_configs_load_with_every_section(name: str) -> None:
    config = load_config({"config": str(INTEGRATION / name)}, env={})
    TarPackagerConfig.from_config(config.packager)
    ImagePackagerConfig.from_config(config.packager_image)
    for runtime, section in config.runtimes.items():
        RUNTIME_CONFIGS[runtime].from_config(section)
    for bus, section in config.bus_sections.items():
        BUS_CONFIGS[bus].from_config(section)


def test_default_config_documents_the_defaults() -> None:
    documented = load_config({"config": str(INTEGRATION / "dsm.toml")}, env={})
    built_in = load_config({}, env={"DSM_CONFIG_FILE": ""})
    assert documented.lcm == built_in.lcm
    daemon_keys = ("state_dir", "socket", "socket_mode", "socket_group", "shared_read_seconds", "buses", "log_level",
                   "datamodel_dir")  # fmt: skip
    for key in daemon_keys:
        assert getattr(documented, key) == getattr(built_in, key), key


def test_default_config_lists_every_adapter_key_with_its_default() -> None:
    text = (INTEGRATION / "dsm.toml").read_text()
    raw = tomllib.loads(text)
    commented = set(re.findall(r"^# (\w+) = ", text, flags=re.MULTILINE))  # keys with no default value
    sections: dict[tuple[str, str], type] = {
        ("packager", "tar"): TarPackagerConfig,
        ("packager", "image"): ImagePackagerConfig,
    }
    sections |= {("runtime", name): cls for name, cls in RUNTIME_CONFIGS.items()}
    sections |= {("bus", name): cls for name, cls in BUS_CONFIGS.items()}
    for (kind, name), cls in sections.items():
        if name not in raw[kind]:
            continue  # crun shares runc's section layout
        section = raw[kind][name]
        assert set(section) | commented >= {field.name for field in dataclasses.fields(cls)}, f"[{kind}.{name}]"
        assert cls.from_config(section) == cls.from_config({}), f"[{kind}.{name}]"


def test_yocto_recipe_installs_existing_files_and_declares_the_python_dependencies() -> None:
    recipe = (INTEGRATION / "yocto" / "dsm-tr181_git.bb").read_text()
    for path in re.findall(r"\$\{S\}/([\w./*-]+)", recipe):
        assert list(ROOT.glob(path)), f"the recipe installs {path}, which does not exist"
    for checksum in re.findall(r"file://([\w./-]+);md5=([0-9a-f]{32})", recipe):
        assert hashlib.md5((ROOT / checksum[0]).read_bytes()).hexdigest() == checksum[1], checksum[0]
    setup = (ROOT / "setup.cfg").read_text()
    requires = re.search(r"install_requires =\n((?:    .+\n)+)", setup).group(1)  # type: ignore[union-attr]
    for requirement in requires.split():
        name = re.split(r"[<>=!,]", requirement)[0].lower()
        if name:
            yocto = {"pygobject": "python3-pygobject"}.get(name, f"python3-{name}")
            assert yocto in recipe, f"RDEPENDS lacks {yocto} for {requirement}"


def test_rpi_setup_dry_run_prints_and_changes_nothing(tmp_path: Path) -> None:
    done = subprocess.run([str(ROOT / "rpi" / "setup.sh"), "--dry-run", "--runtime", "crun", "--bus", "dbus"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert "+ env DEBIAN_FRONTEND=noninteractive apt-get install" in done.stdout and " crun" in done.stdout
    assert "+ systemctl enable --now dsm.service" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_rpi_setup_into_a_staging_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = [str(ROOT / "rpi" / "setup.sh"), "--root", str(root), "--runtime", "crun", "--bus", "rbus"]
    subprocess.run(run, capture_output=True, text=True, check=True)
    config = load_config({"config": str(root / "etc/dsm/dsm.toml")}, env={})
    assert config.buses == ("rbus",) and config.lcm.execenvs[0].runtime == "crun"
    assert OciRuntimeConfig.from_config(config.runtimes["crun"]).cgroup2_mount_namespace
    assert (root / "lib/systemd/system/dsm.service").read_bytes() == (INTEGRATION / "dsm.service").read_bytes()
    policy = root / "etc/dbus-1/system.d/com.rdkcentral.DSM.conf"
    assert policy.read_bytes() == (INTEGRATION / "com.rdkcentral.DSM.conf").read_bytes()
    assert os.readlink(root / "usr/bin/dsm") == "/opt/dsm/venv/bin/dsm"
    assert sorted(p.name for p in (root / "usr/share/dsm-tr181/datamodel").iterdir()) == sorted(
        p.name for p in (ROOT / "datamodel").glob("*.xml")
    )
    (root / "etc/dsm/dsm.toml").write_text("# edited by the operator\n")
    subprocess.run(run, capture_output=True, text=True, check=True)  # a second run keeps the config
    assert (root / "etc/dsm/dsm.toml").read_text() == "# edited by the operator\n"


def test_rdkb_config_requires_signatures_from_its_trust_store() -> None:
    config = load_config({"config": str(INTEGRATION / "dsm-rdkb.toml")}, env={})
    (ee,) = config.lcm.execenvs
    assert ee.require_signature and ee.signers == ("vendor-ca",)
    assert config.lcm.trust_dir == Path("/etc/dsm/signers")
    default = load_config({"config": str(INTEGRATION / "dsm.toml")}, env={})
    assert not default.lcm.execenvs[0].require_signature and default.lcm.execenvs[0].signers == ()
