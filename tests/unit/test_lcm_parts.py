"""The small parts under the LCM: version order, DU UUIDs (TR-181 Annex C), the daemon
configuration, the SQLite store and the credential sealer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181 import config as config_module
from dsm_tr181.config import ConfigError, load_config
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm import euinputs, versions
from dsm_tr181.lcm.identity import annex_c_uuid
from dsm_tr181.lcm.records import DeploymentUnitRecord, ExecEnvRecord, ExecutionUnitRecord, OperationRecord
from dsm_tr181.secretbox import FernetSealer
from dsm_tr181.store import MIGRATIONS, SqliteStore

pytestmark = pytest.mark.unit


# == versions.compare ======================================================================


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0.0", "1.0.1"),
        ("1.0.9", "1.0.10"),  # numbers compare as numbers, not as text
        ("1.9", "1.10"),
        ("1.99.99", "2.0"),
        ("1.0", "1.0.1"),
        ("1.0.rc1", "1.0.1"),  # text sorts before a number at the same place (as dpkg)
        ("1.0-alpha", "1.0-beta"),
        ("2.0-rc1", "2.0"),  # a pre-release comes before its release
        ("2.0", "2.0.1"),
        ("", "0.1"),
    ],
)
def test_versions_compare_orders_older_before_newer(older: str, newer: str) -> None:
    assert versions.compare(older, newer) == -1
    assert versions.compare(newer, older) == 1


@pytest.mark.parametrize(("a", "b"), [("1.2.3", "1.2.3"), ("1.01", "1.1"), ("2.0-rc1", "2.0.rc.1")])
def test_versions_compare_equal_versions(a: str, b: str) -> None:
    assert versions.compare(a, b) == 0


def test_versions_compare_is_a_total_order() -> None:
    chain = ["0.9", "1.0.rc1", "1.0", "1.0.1", "1.2", "1.10", "2.0"]
    for i, a in enumerate(chain):
        for j, b in enumerate(chain):
            assert versions.compare(a, b) == (i > j) - (i < j), (a, b)


# == identity.annex_c_uuid =================================================================


def test_annex_c_example_uuid_is_version_5_over_the_dns_namespace_of_the_fqdn() -> None:
    # TR-181 Annex C example: Name "sample1", Vendor "broadband-forum.org" -> "sample1.broadband-forum.org."
    value = annex_c_uuid("sample1", "broadband-forum.org")
    assert value == str(uuid.uuid5(uuid.NAMESPACE_DNS, "sample1.broadband-forum.org."))
    assert value == "fe2d23bd-dd02-51b8-af04-f5c18b2b0aa6"
    parsed = uuid.UUID(value)
    assert (parsed.version, parsed.variant) == (5, uuid.RFC_4122)


def test_annex_c_percent_encodes_what_a_domain_label_cannot_hold() -> None:
    assert annex_c_uuid("sample.1", "broadband-forum.org") == str(
        uuid.uuid5(uuid.NAMESPACE_DNS, "sample%2e1.broadband-forum.org.")
    )
    assert annex_c_uuid("sample.1", "broadband-forum.org") != annex_c_uuid("sample1", "broadband-forum.org")
    assert annex_c_uuid("a b/é", "v.org") == str(uuid.uuid5(uuid.NAMESPACE_DNS, "a%20b%2f%c3%a9.v.org."))


def test_annex_c_uuid_depends_on_name_and_vendor_only() -> None:
    assert annex_c_uuid("app", "acme") == annex_c_uuid("app", "acme")
    assert annex_c_uuid("app", "acme") != annex_c_uuid("app", "other")
    assert annex_c_uuid("app-1_x", "acme") == str(uuid.uuid5(uuid.NAMESPACE_DNS, "app-1_x.acme."))


# == config.load_config ====================================================================


@pytest.fixture
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a /etc/dsm/dsm.toml of the machine out of the tests."""
    monkeypatch.setattr(config_module, "DEFAULT_FILE", tmp_path / "absent" / "dsm.toml")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(path: Path | None = None, env: dict[str, str] | None = None, **argv: Any) -> config_module.DaemonConfig:
    if path is not None:
        argv["config"] = str(path)
    return load_config(argv, env=env or {})


@pytest.mark.usefixtures("no_default_file")
def test_config_defaults_without_a_file() -> None:
    config = load()
    assert (config.state_dir, config.socket, config.socket_mode) == (
        Path("/var/lib/dsm"),
        Path("/run/dsm/dsm.sock"),
        0o660,
    )
    assert (config.buses, config.log_level, config.socket_group) == (("auto",), "info", "")
    assert (config.lcm.bundle_dir, config.lcm.log_dir) == (Path("/var/lib/dsm/bundles"), Path("/var/lib/dsm/logs"))
    assert [(ee.name, ee.runtime, ee.enable) for ee in config.lcm.execenvs] == [("default", "runc", True)]
    assert config.runtimes == {"runc": {"binary": "runc"}}
    assert (config.lcm.allow_downgrade, config.lcm.max_parallel_operations, config.lcm.preinstalled) == (False, 2, ())
    assert config.lcm.update_settle_time == 1.0  # README "Update, settle and rollback"
    assert dict(config.packager) == {}


TOML = """
[daemon]
state_dir = "/data/dsm"
socket = "/run/x.sock"
socket_mode = "0640"
buses = ["dbus"]
log_level = "debug"

[lcm]
allow_downgrade = true
max_parallel_operations = 3
usage_interval = 2
preinstalled = ["file:///opt/du/a.tar"]

[[execenv]]
name = "main"
initial_run_level = 5

[[execenv]]
name = "spare"
runtime = "crun"
enable = false

[packager.tar]
ca_file = "/etc/ssl/ca.pem"

[runtime.crun]
kill_timeout = 3
"""


def check_full_config(config: config_module.DaemonConfig) -> None:
    assert (config.state_dir, config.socket, config.socket_mode) == (Path("/data/dsm"), Path("/run/x.sock"), 0o640)
    assert (config.buses, config.log_level) == (("dbus",), "debug")
    assert config.lcm.bundle_dir == Path("/data/dsm/bundles")  # follows state_dir
    assert (config.lcm.allow_downgrade, config.lcm.max_parallel_operations, config.lcm.usage_interval) == (True, 3, 2)
    assert config.lcm.preinstalled == ("file:///opt/du/a.tar",)
    assert [(ee.name, ee.runtime, ee.enable, ee.initial_run_level) for ee in config.lcm.execenvs] == [
        ("main", "runc", True, 5),
        ("spare", "crun", False, 0),
    ]
    assert config.packager == {"ca_file": "/etc/ssl/ca.pem"}
    assert config.runtimes == {"runc": {"binary": "runc"}, "crun": {"binary": "crun", "kill_timeout": 3}}


@pytest.mark.usefixtures("no_default_file")
def test_config_from_toml(tmp_path: Path) -> None:
    check_full_config(load(write(tmp_path / "dsm.toml", TOML)))


@pytest.mark.usefixtures("no_default_file")
def test_config_from_json_has_the_same_layout(tmp_path: Path) -> None:
    import tomllib

    data = tomllib.loads(TOML)
    check_full_config(load(write(tmp_path / "dsm.json", json.dumps(data, indent=2))))


ORIGINAL = {
    "DSMController": {"EELimit": 5, "RuntimeConfig": "/home/user/dsm.config"},
    "ExecutionEnvironments": [
        {"name": "default", "enabled": True, "status": "Up", "InitialRunLevel": 5, "id": 1, "default": True},
        {"name": "test", "enabled": False, "status": "Up", "InitialRunLevel": 3, "id": 2},
    ],
    "Packagers": {
        "local-tarball": {"repo": "/home/user/repo", "destination": "/home/user/destination"},
        "remote-tarball": {"repo": "http://localhost:8080"},
    },
    "CommandServer": {"domain-socket": "/home/user/command.socket"},
}


@pytest.mark.usefixtures("no_default_file")
def test_config_translates_the_original_dsm_config(tmp_path: Path) -> None:
    config = load(write(tmp_path / "dsm.config", json.dumps(ORIGINAL)))
    assert [(ee.name, ee.enable, ee.initial_run_level) for ee in config.lcm.execenvs] == [
        ("default", True, 5),
        ("test", False, 3),
    ]
    assert config.lcm.default_execenv == "default"
    assert config.lcm.bundle_dir == Path("/home/user/destination")
    assert config.socket == Path("/home/user/command.socket")


@pytest.mark.usefixtures("no_default_file")
def test_config_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "dsm.toml", TOML)
    env = {"DSM_CONFIG_FILE": str(path), "DSM_STATE_DIR": "/srv/state", "DSM_SOCKET": "/tmp/e.sock"}
    config = load(env=env)
    assert (config.state_dir, config.socket) == (Path("/srv/state"), Path("/tmp/e.sock"))
    assert config.lcm.bundle_dir == Path("/srv/state/bundles")
    assert config.lcm.allow_downgrade  # the rest still comes from DSM_CONFIG_FILE
    # The command line beats the environment.
    other = write(tmp_path / "other.toml", '[daemon]\nstate_dir = "/from/argv/file"\n')
    config = load(other, env=env, socket="/argv.sock")
    assert (config.state_dir, config.socket) == (Path("/srv/state"), Path("/argv.sock"))
    assert not config.lcm.allow_downgrade


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[lmc]\nallow_downgrade = true\n", "lmc"),  # a misspelt section is not ignored
        ("[daemon]\nstate_dri = '/x'\n", "state_dri"),
        ("[lcm]\nallow_dowgrade = true\n", "allow_dowgrade"),
        ("[[execenv]]\nname = 'x'\nrun_level = 1\n", "run_level"),
    ],
    ids=["section", "daemon", "lcm", "execenv"],
)
@pytest.mark.usefixtures("no_default_file")
def test_config_unknown_keys_are_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"\.{named}: unknown key"):
        load(write(tmp_path / "dsm.toml", text))


WRONG_TYPES = {
    "lcm bool": ("[lcm]\nallow_downgrade = 'yes'\n", "lcm.allow_downgrade"),
    "lcm integer": ("[lcm]\nmax_parallel_operations = 2.5\n", "lcm.max_parallel_operations"),
    "lcm number": ("[lcm]\nusage_interval = true\n", "lcm.usage_interval"),
    "lcm list": ("[lcm]\npreinstalled = 'file:///a.tar'\n", "lcm.preinstalled"),
    "lcm path": ("[lcm]\nbundle_dir = 5\n", "lcm.bundle_dir"),
    "lcm range": ("[lcm]\nusage_interval = 0\n", "usage_interval"),
    "execenv number": ("[[execenv]]\nname = 'x'\ninitial_run_level = '5'\n", r"execenv\[0\].initial_run_level"),
    "execenv name": ("[[execenv]]\nname = '1x'\n", r"execenv\[0\]"),
    "execenv not an array": ("[execenv]\nname = 'x'\n", "^execenv: must be an array"),
    "daemon path": ("[daemon]\nstate_dir = 5\n", "daemon.state_dir"),
    "daemon buses": ("[daemon]\nbuses = 5\n", "daemon.buses"),
    "daemon bus name": ("[daemon]\nbuses = ['carrier-pigeon']\n", "daemon.buses"),
    "daemon socket_mode": ("[daemon]\nsocket_mode = 'rw'\n", "daemon.socket_mode"),
    "daemon socket_mode bool": ("[daemon]\nsocket_mode = true\n", "daemon.socket_mode"),
    "daemon log_level": ("[daemon]\nlog_level = 'verbose'\n", "daemon.log_level"),
    "section not a table": ("lcm = 5\n", "^lcm: must be a table"),
    "packager not a table": ("packager = 5\n", "^packager: must be a table"),
    "runtime section": ("[runtime]\nrunc = 5\n", r"^runtime\.runc: must be a table"),
}


@pytest.mark.parametrize(("text", "named"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
@pytest.mark.usefixtures("no_default_file")
def test_config_wrong_types_are_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(write(tmp_path / "dsm.toml", text))


@pytest.mark.usefixtures("no_default_file")
def test_config_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load(write(tmp_path / "broken.toml", "[daemon\n"))
    with pytest.raises(ConfigError, match=r"broken\.json"):
        load(write(tmp_path / "broken.json", '{"daemon": '))


# == store.SqliteStore =====================================================================


def sample_records() -> list[Any]:
    return [
        ExecEnvRecord(name="default", instance=1, initial_run_level=5),
        DeploymentUnitRecord(instance=3, uuid="u-3", ee="default", status="Installed", url="/a.tar", eus=[7]),
        ExecutionUnitRecord(
            instance=7, du=3, euid="default-7", container_id="default-7", ee="default", auto_restart={"Enable": True}
        ),
        OperationRecord(du=3, kind="update", started="2026-01-01T00:00:00Z", restart_eus=[7]),
    ]


def test_store_round_trip(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state" / "dsm.db")
    store.commit(put=sample_records(), counters={"Device.SoftwareModules.DeploymentUnit.": 4})
    store.close()

    snapshot = SqliteStore(tmp_path / "state" / "dsm.db").load()

    assert snapshot.of(ExecEnvRecord) == [sample_records()[0]]
    assert snapshot.of(DeploymentUnitRecord) == [sample_records()[1]]
    assert snapshot.of(ExecutionUnitRecord) == [sample_records()[2]]
    assert snapshot.of(OperationRecord) == [sample_records()[3]]
    assert snapshot.counters == {"Device.SoftwareModules.DeploymentUnit.": 4}


def test_store_put_replaces_and_delete_removes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "dsm.db")
    du = sample_records()[1]
    store.commit(put=[du])
    du.status = "Updating"
    store.commit(put=[du])
    assert [r.status for r in store.load().of(DeploymentUnitRecord)] == ["Updating"]
    store.commit(delete=[du])
    assert store.load().of(DeploymentUnitRecord) == []


def test_store_commit_without_waiting_for_the_disk_is_flushed_by_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durable=False: committed (another connection sees it) and back to synchronous=FULL
    on return; the store's thread fsyncs the WAL file itself (close waits for it)."""
    path = tmp_path / "dsm.db"
    store = SqliteStore(path)
    store.commit(put=[sample_records()[0]])  # the WAL exists from here on
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr("dsm_tr181.store.os.fsync", spy)
    eu = sample_records()[2]
    store.commit(put=[eu], durable=False)

    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM record WHERE kind = 'executionunit'").fetchone() == (1,)
    assert store.db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL again for the next commit
    wal = os.stat(f"{path}-wal").st_ino
    store.close()
    assert wal in synced
    assert SqliteStore(path).load().of(ExecutionUnitRecord) == [eu]


def test_store_commit_without_waiting_survives_a_kill_9(tmp_path: Path) -> None:
    """The bytes are the kernel's once commit() returns: a process killed at once keeps them."""
    path = tmp_path / "dsm.db"
    writer = (
        "import os, signal, sys\n"
        "from dsm_tr181.lcm.records import ExecEnvRecord\n"
        "from dsm_tr181.store import SqliteStore\n"
        "store = SqliteStore(__import__('pathlib').Path(sys.argv[1]))\n"
        "store.commit(put=[ExecEnvRecord(name='default', instance=1)], durable=False)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", writer, str(path)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert [r.name for r in SqliteStore(path).load().of(ExecEnvRecord)] == ["default"]


class Unserialisable:
    """A value json.dumps cannot write: makes a commit fail half-way through."""


def test_store_failing_commit_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "dsm.db")
    first, second = sample_records()[1], sample_records()[2]
    store.commit(put=[first], counters={"t.": 1})
    bad = OperationRecord(du=9, kind="install", started="x", target=Unserialisable())  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        store.commit(put=[second, bad], delete=[first], counters={"t.": 2})

    snapshot = store.load()
    assert snapshot.of(DeploymentUnitRecord) == [first]  # the delete was rolled back
    assert snapshot.of(ExecutionUnitRecord) == [] and snapshot.of(OperationRecord) == []
    assert snapshot.counters == {"t.": 1}
    store.commit(put=[second])  # and the store still works
    assert store.load().of(ExecutionUnitRecord) == [second]


def test_store_files_are_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new" / "dsm.db")
    store.commit(put=sample_records())
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    for name in ("dsm.db", "dsm.db-wal"):
        assert stat.S_IMODE(os.stat(tmp_path / "new" / name).st_mode) == 0o600, name
    store.close()


def test_store_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "dsm.db"
    store = SqliteStore(path)
    store.commit(put=sample_records())
    store.close()
    for _ in range(2):
        SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    assert len(SqliteStore(path).load().of(DeploymentUnitRecord)) == 1


def test_store_ignores_fields_and_kinds_it_does_not_know(tmp_path: Path) -> None:
    """A store written by a newer version still loads (unknown fields and kinds skipped)."""
    path = tmp_path / "dsm.db"
    SqliteStore(path).close()
    data = {**sample_records()[1].to_json(), "future_field": 1}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO record VALUES ('deploymentunit', '3', ?)", (json.dumps(data),))
        db.execute("INSERT INTO record VALUES ('future-kind', 'k', '{}')")
    assert SqliteStore(path).load().of(DeploymentUnitRecord) == [sample_records()[1]]


# == secretbox.FernetSealer ================================================================


def test_sealer_round_trip_hides_the_secret(tmp_path: Path) -> None:
    sealer = FernetSealer(tmp_path / "secret.key")
    sealed = sealer.seal("operator\0pa55word")
    assert "pa55word" not in sealed and "operator" not in sealed
    assert sealed != sealer.seal("operator\0pa55word")  # fresh IV each time
    assert sealer.unseal(sealed) == "operator\0pa55word"


def test_sealer_key_file_is_private_and_reused(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "secret.key"
    sealed = FernetSealer(key).seal("s3cret")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert FernetSealer(key).unseal(sealed) == "s3cret"  # a restart reads the same key


def test_sealer_with_another_key_cannot_unseal(tmp_path: Path) -> None:
    sealed = FernetSealer(tmp_path / "a.key").seal("s3cret")
    other: Callable[[str], str] = FernetSealer(tmp_path / "b.key").unseal
    with pytest.raises(ValueError, match="cannot be decrypted"):
        other(sealed)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        FernetSealer(tmp_path / "a.key").unseal(sealed[:-4] + "AAAA")  # tampered


def test_sealer_refuses_a_key_file_that_holds_no_key(tmp_path: Path) -> None:
    key = write(tmp_path / "secret.key", "not a key\n")
    with pytest.raises(ValueError, match=r"secret\.key does not hold a device key"):
        FernetSealer(key)
    assert key.read_text() == "not a key\n"  # never replaced: credentials may have been sealed with it


def test_sealer_replaces_an_empty_key_file_left_by_a_cut_creation(tmp_path: Path) -> None:
    key = write(tmp_path / "secret.key", "")
    sealer = FernetSealer(key)
    assert sealer.unseal(sealer.seal("x")) == "x"
    assert len(key.read_bytes().strip()) == 44
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        ({}, None),  # nothing said: Update keeps the EU's mode, InstallDU gives the ExecEnv's
        ({euinputs.MODE_INPUT: "None"}, "None"),
        ({euinputs.MODE_INPUT: "Bridged", "NetworkConfig.ShareParentNetwork": False}, "Bridged"),
        ({"NetworkConfig.ShareParentNetwork": True}, "ShareParent"),
        ({"NetworkConfig.ShareParentNetwork": True, euinputs.MODE_INPUT: "ShareParent"}, "ShareParent"),
        ({"NetworkConfig.ShareParentNetwork": False}, ""),  # not sharing: the ExecEnv's default
    ],
)
def test_network_mode_inputs(args: dict[str, Any], mode: str | None) -> None:
    assert euinputs._network_mode(args) == mode


@pytest.mark.parametrize(
    "args",
    [
        {euinputs.MODE_INPUT: "Host"},
        {"NetworkConfig.ShareParentNetwork": True, euinputs.MODE_INPUT: "None"},
        {"NetworkConfig.ShareParentNetwork": False, euinputs.MODE_INPUT: "ShareParent"},
    ],
)
def test_contradicting_or_unknown_network_modes_are_invalid_arguments(args: dict[str, Any]) -> None:
    with pytest.raises(Fault) as caught:
        euinputs._network_mode(args)
    assert caught.value.code is FaultCode.INVALID_ARGUMENTS
