"""Confinement by default, against the real daemon and real containers (runc, and crun in a
private cgroup-v2 mount namespace).

A bundle that asks for more than its ExecEnv allows is refused at install with fault 7225
naming every offending item, and leaves nothing; a benign bundle runs with the default
capability set, fresh namespaces, no_new_privs, seccomp filter mode and no host path; a
privileged EU runs only where the ExecEnv's policy allows; user namespaces map each EU to its
own UID range; two daemons never share a cgroup. The container's view is read from the host
(/proc/<pid>/status, /proc/<pid>/ns/*, /proc/<pid>/uid_map), never from what the daemon says.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsm_tr181.containerspec.defaults import DEFAULT_CAPABILITIES
from dsm_tr181.errors import FaultCode
from dsm_tr181.sample_bundle import make_archive, make_bundle
from tests.integration.lcm_helpers import (
    DU,
    EE,
    EU,
    INSTALL_DU,
    eu_of,
    install,
    needs_runc,
    operate,
    rows,
    tree_files,
    wait_status,
)
from tests.support.daemon import DsmDaemon

pytestmark = [pytest.mark.integration, needs_runc]

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}  # fmt: skip
SERVICE = ("/bin/sh", "-c", "trap 'exit 0' TERM; echo confined-start; sleep 3600 & wait")
NAMESPACES = ("pid", "net", "mnt", "ipc", "uts", "cgroup")
FLAVOURS: dict[str, dict[str, Any]] = {
    "runc": {"binary": "runc"},
    "crun": {"binary": "crun", "cgroup2_mount_namespace": True, "device_rules": False},
}


def _mask(names: tuple[str, ...] | list[str]) -> int:
    return sum(1 << CAP_NUMBERS[name] for name in names)


@pytest.fixture(scope="module")
def searchable_tmp() -> Iterator[Path]:
    """A work directory whose parents others may search (a user-namespaced EU's root must
    reach its root filesystem; pytest's own temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="dsm-confinement-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _daemon(work: Path, flavour: str) -> DsmDaemon:
    work.mkdir(parents=True, exist_ok=True)
    bundles = work / "bundles"
    bundles.mkdir(mode=0o711, exist_ok=True)
    execenvs = [
        {"name": "default", "runtime": flavour},
        {"name": "privileged", "runtime": flavour, "allow_privileged": True},
        {"name": "userns", "runtime": flavour, "user_namespace": True},
        {"name": "allowing", "runtime": flavour, "allowed_host_paths": [str(work / "shared")],
         "extra_capabilities": ["CAP_SYS_ADMIN"]},
    ]  # fmt: skip
    return DsmDaemon(
        work,
        lcm={"bundle_dir": str(bundles)},
        execenvs=execenvs,
        extra={f"runtime.{flavour}": FLAVOURS[flavour]},
    )


@pytest.fixture(scope="module", params=list(FLAVOURS))
def daemon(request: pytest.FixtureRequest, searchable_tmp: Path) -> Iterator[DsmDaemon]:
    flavour = request.param
    if shutil.which(flavour) is None:
        pytest.skip(f"{flavour} is not installed")
    dsm = _daemon(searchable_tmp / flavour, flavour)
    try:
        yield dsm.start()
    finally:
        dsm.cleanup()


@pytest.fixture
def dsm(daemon: DsmDaemon) -> Iterator[DsmDaemon]:
    yield daemon
    for path in rows(daemon, DU):
        operate(daemon, path + "Uninstall()")


def archive(work: Path, name: str, change: Callable[[dict[str, Any]], None] | None = None) -> str:
    """A busybox DU whose config.json ``change`` edits; its file:// URL."""
    source = work / "src" / name
    shutil.rmtree(source, ignore_errors=True)
    make_bundle(source, args=SERVICE)
    if change is not None:
        config = json.loads((source / "config.json").read_text())
        change(config)
        (source / "config.json").write_text(json.dumps(config))
    (work / "archives").mkdir(exist_ok=True)
    out = make_archive(source, work / "archives" / f"{name}.tar")
    return out.as_uri()


def ee_ref(dsm: DsmDaemon, name: str) -> str:
    for path in rows(dsm, EE):
        if dsm.get(path + "Name")[path + "Name"] == name:
            return path.rstrip(".")
    raise AssertionError(f"no ExecEnv {name}")


def started(dsm: DsmDaemon, url: str, execenv: str = "default", **args: Any) -> tuple[str, int]:
    """Install ``url`` into ``execenv``, start its EU; (EU path, the container's init pid)."""
    outcome = install(dsm, url, ExecutionEnvRef=ee_ref(dsm, execenv), **args)
    assert outcome.ok, outcome
    du = outcome.event["DeploymentUnitRef"] + "."  # type: ignore[index]
    eu = eu_of(dsm, du)
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")
    euid = dsm.get(eu + "EUID")[eu + "EUID"]
    pid_files = list(dsm.state.glob(f"execenvs/{execenv}/oci-*/containers/{euid}.pid"))
    assert pid_files, f"no pid file for {euid}"
    return eu, int(pid_files[0].read_text())


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def nothing_left(dsm: DsmDaemon) -> None:
    assert rows(dsm, DU) == [] and rows(dsm, EU) == []
    assert tree_files(dsm.work / "bundles") == []


# -- refused ---------------------------------------------------------------------------------------


def _hostile(config: dict[str, Any]) -> None:
    every = sorted(CAP_NUMBERS)
    config["process"]["capabilities"] = {kind: every for kind in ("bounding", "effective", "permitted")}
    config["mounts"].append({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]})
    config["linux"]["namespaces"] = [{"type": "ipc"}, {"type": "uts"}]  # host pid, network and mount


PARTS: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "capability": (
        lambda c: c["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN"),
        ["capability CAP_SYS_ADMIN"],
    ),
    "host mount": (
        lambda c: c["mounts"].append(
            {"destination": "/etc-host", "type": "bind", "source": "/etc", "options": ["bind", "ro"]}
        ),
        ["host mount /etc at /etc-host"],
    ),
    "host namespace": (
        lambda c: c["linux"].update(namespaces=[{"type": t} for t in ("pid", "ipc", "uts", "mount")]),
        ["the host's network namespace"],
    ),
    "joined namespace": (
        lambda c: c["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"}),
        ["joining the network namespace /proc/1/ns/net"],
    ),
    "device": (
        lambda c: c["linux"].update(devices=[{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]),
        ["device /dev/sda"],
    ),
    "device rule": (
        lambda c: c["linux"].update(resources={"devices": [{"allow": True, "access": "rwm"}]}),
        ["device access a *:* rwm"],
    ),
    "hook": (
        lambda c: c.update(hooks={"prestart": [{"path": "/usr/bin/touch", "args": ["touch", "/pwned"]}]}),
        ["prestart hook /usr/bin/touch"],
    ),
    "sysctl": (lambda c: c["linux"].update(sysctl={"kernel.domainname": "x"}), ["sysctl kernel.domainname"]),
    "read-write sysfs": (
        lambda c: c["mounts"].__setitem__(-1, {"destination": "/sys", "type": "sysfs", "source": "sysfs"}),
        ["read-write sysfs at /sys"],
    ),
    "oom protection": (lambda c: c["process"].update(oomScoreAdj=-1000), ["oomScoreAdj -1000"]),
}


def test_a_hostile_bundle_is_refused_naming_everything_and_leaves_nothing(dsm: DsmDaemon) -> None:
    marker = Path("/tmp") / f"dsm-pwned-{os.getpid()}"
    url = archive(dsm.work, "hostile", _hostile)
    outcome = install(dsm, url)
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DU_EE_MISMATCH.usp, outcome
    message = outcome.fault["message"]
    for item in ("capability CAP_SYS_ADMIN", "capability CAP_MKNOD", "host mount / at /host",
                 "the host's pid namespace", "the host's network namespace", "the host's mount namespace"):  # fmt: skip
        assert item in message, message
    assert outcome.event is not None and outcome.event["CurrentState"] == "Failed"
    assert outcome.event["Fault.FaultCode"] == str(FaultCode.DU_EE_MISMATCH.usp)
    nothing_left(dsm)
    assert not marker.exists()


@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_alone_is_refused(dsm: DsmDaemon, part: str) -> None:
    change, expected = PARTS[part]
    outcome = install(dsm, archive(dsm.work, "part-" + part.replace(" ", "-"), change))
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.DU_EE_MISMATCH.usp, outcome
    for item in expected:
        assert item in outcome.fault["message"]
    nothing_left(dsm)


def test_the_allow_list_admits_what_it_names(dsm: DsmDaemon) -> None:
    shared = dsm.work / "shared"
    shared.mkdir(exist_ok=True)
    (shared / "note").write_text("from the host")

    def wants(config: dict[str, Any]) -> None:
        config["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
        config["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared),
                                 "options": ["bind", "ro"]})  # fmt: skip
        (dsm.work / "src" / "allowed" / "rootfs" / "shared").mkdir(parents=True, exist_ok=True)

    refused = install(dsm, archive(dsm.work, "allowed", wants))
    assert refused.fault is not None and refused.fault["code"] == FaultCode.DU_EE_MISMATCH.usp
    _eu, pid = started(dsm, archive(dsm.work, "allowed", wants), "allowing")
    assert Path(f"/proc/{pid}/root/shared/note").read_text() == "from the host"
    assert int(status_of(pid)["CapBnd"], 16) & _mask(["CAP_SYS_ADMIN"])


# -- what a benign bundle gets ---------------------------------------------------------------------


def test_a_benign_bundle_runs_confined(dsm: DsmDaemon) -> None:
    secret = dsm.work / "host-only"
    secret.write_text("host")

    def no_capabilities(config: dict[str, Any]) -> None:
        del config["process"]["capabilities"]  # the default set applies

    eu, pid = started(dsm, archive(dsm.work, "benign", no_capabilities))
    status = status_of(pid)
    assert int(status["CapEff"], 16) == _mask(DEFAULT_CAPABILITIES)
    assert int(status["CapBnd"], 16) == _mask(DEFAULT_CAPABILITIES)
    assert int(status["CapInh"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    for kind in NAMESPACES:
        assert namespace(pid, kind) != namespace("self", kind), kind
    root = Path(f"/proc/{pid}/root")
    assert not (root / str(secret).lstrip("/")).exists()
    mounts = Path(f"/proc/{pid}/mountinfo").read_text()
    assert str(dsm.work / "host-only") not in mounts
    assert " /proc/timer_list " in mounts and " /sys/firmware " in mounts  # masked
    detail = dsm.call("eu.detail", {"uid": dsm.get(eu + "EUID")[eu + "EUID"]})
    confinement = detail["confinement"]
    assert confinement["mode"] == "default" and confinement["no_new_privileges"] is True
    assert sorted(confinement["capabilities"]) == sorted(DEFAULT_CAPABILITIES)
    assert confinement["host_mounts"] == [] and "network" in confinement["namespaces"]
    assert f"EU {detail['uid']} confinement: " in dsm.log()


def test_a_bundle_asking_less_gets_less(dsm: DsmDaemon) -> None:
    _eu, pid = started(dsm, archive(dsm.work, "modest"))  # the sample asks for 3 capabilities
    assert int(status_of(pid)["CapEff"], 16) == _mask(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"])


def test_the_seccomp_profile_denies_what_it_lists(dsm: DsmDaemon) -> None:
    """With CAP_SYS_ADMIN granted (the "allowing" ExecEnv), only the seccomp profile stands
    between the process and unshare(2)/mount(2)."""
    probe = (
        "unshare -n true 2>/dev/null && echo UNSHARE-OK || echo UNSHARE-DENIED; "
        "mount -t tmpfs none /tmp 2>/dev/null && echo MOUNT-OK || echo MOUNT-DENIED; "
        "unshare 2>&1 | head -1; sleep 3600"
    )

    def with_probe(config: dict[str, Any]) -> None:
        config["process"]["args"] = ["/bin/sh", "-c", probe]
        for kind in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")
        _link(dsm.work / "src" / "probe" / "rootfs" / "bin")

    eu, pid = started(dsm, archive(dsm.work, "probe", with_probe), "allowing")
    assert int(status_of(pid)["CapEff"], 16) & _mask(["CAP_SYS_ADMIN"])
    log = Path(dsm.state / "logs" / (dsm.get(eu + "EUID")[eu + "EUID"] + ".log"))
    text = _eventually_text(log, "MOUNT-")
    assert "UNSHARE-DENIED" in text and "MOUNT-DENIED" in text, text
    # unshare(2) with no flag at all needs no privilege: only the filter refuses it.
    assert "unshare(0x0): Operation not permitted" in text


def _link(bin_dir: Path) -> None:
    link = bin_dir / "unshare"
    if not link.is_symlink():
        link.symlink_to("busybox")


def _eventually_text(path: Path, needle: str) -> str:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


# -- privileged ------------------------------------------------------------------------------------


def _host_pid(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]


def test_privileged_is_refused_without_the_policy(dsm: DsmDaemon) -> None:
    outcome = install(dsm, archive(dsm.work, "wants-privilege", _host_pid), Privileged=True)
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.REQUEST_DENIED.usp, outcome
    assert "does not allow privileged" in outcome.fault["message"]
    nothing_left(dsm)


def test_privileged_runs_as_asked_where_the_policy_allows(dsm: DsmDaemon) -> None:
    eu, pid = started(dsm, archive(dsm.work, "privileged", _host_pid), "privileged", Privileged=True)
    assert dsm.get(eu + "Privileged")[eu + "Privileged"] == "true"
    assert namespace(pid, "pid") == namespace("self", "pid")  # it asked for the host's
    assert namespace(pid, "net") != namespace("self", "net")


# -- user namespaces and cgroups ---------------------------------------------------------------------


def test_user_namespaces_map_each_eu_to_its_own_range(dsm: DsmDaemon) -> None:
    maps = []
    for name, uids in (("userns-a", 1), ("userns-b", 100_000)):
        _eu, pid = started(dsm, archive(dsm.work, name), "userns", NumRequiredUIDs=uids)
        fields = Path(f"/proc/{pid}/uid_map").read_text().split()
        maps.append((int(fields[0]), int(fields[1]), int(fields[2])))
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == fields
        assert namespace(pid, "user") != namespace("self", "user")
    (first, second) = maps
    assert first == (0, 1_000_000, 65536)
    assert second == (0, 1_000_000 + 65536, 100_000)
    # The daemon restarts: the ranges are kept.
    dsm.stop()
    dsm.start()
    for path in rows(dsm, EU):
        wait_status(dsm, path, "Active")
    listed = {int(Path(f"/proc/{pid}/uid_map").read_text().split()[1]) for pid in _pids(dsm, "userns")}
    assert listed == {1_000_000, 1_000_000 + 65536}


def _pids(dsm: DsmDaemon, execenv: str) -> list[int]:
    return [int(p.read_text()) for p in dsm.state.glob(f"execenvs/{execenv}/oci-*/containers/*.pid")]


def test_two_daemons_never_share_a_cgroup(dsm: DsmDaemon, searchable_tmp: Path) -> None:
    other = _daemon(searchable_tmp / "second-daemon", "runc")
    try:
        other.start()
        _eu, mine = started(dsm, archive(dsm.work, "cgroup-a"))
        _eu, theirs = started(other, archive(other.work, "cgroup-a"))
        # Same EUID in both (default-N), different cgroups, each named after its daemon.
        ours = Path(f"/proc/{mine}/cgroup").read_text()
        their = Path(f"/proc/{theirs}/cgroup").read_text()
        assert set(ours.splitlines()).isdisjoint(their.splitlines())
        for text, daemon in ((ours, dsm), (their, other)):
            instance = _instance_name(daemon)
            assert f"/{instance}/default/" in text, text
    finally:
        for path in rows(other, DU) if other.process and other.process.poll() is None else []:
            operate(other, path + "Uninstall()")
        other.cleanup()


def _instance_name(dsm: DsmDaemon) -> str:
    from dsm_tr181.config import default_instance_name

    return default_instance_name(dsm.state)


def test_install_refuses_privileged_before_any_download_with_its_event(dsm: DsmDaemon) -> None:
    """The ExecEnv's policy refuses it, so it is the operation's outcome (README "Outcomes"),
    decided before any download: the URL does not even exist."""
    outcome = operate(
        dsm, INSTALL_DU, {"URL": (dsm.work / "absent.tar").as_uri(), "Privileged": True,
                          "ExecutionEnvRef": ee_ref(dsm, "default")},
    )  # fmt: skip
    assert outcome.fault is not None and outcome.fault["code"] == FaultCode.REQUEST_DENIED.usp
    assert outcome.event is not None and outcome.event["CurrentState"] == "Failed", outcome
    assert outcome.event["Fault.FaultCode"] == str(FaultCode.REQUEST_DENIED.usp)
    nothing_left(dsm)


def test_user_namespaces_need_a_searchable_bundle_dir(tmp_path: Path) -> None:
    """pytest's temporary directories are 0700: a mapped root could not reach its files."""
    dsm = DsmDaemon(tmp_path, execenvs=[{"name": "default", "user_namespace": True}])
    try:
        dsm.start()
        outcome = install(dsm, archive(tmp_path, "unreachable"))
        assert outcome.fault is not None and outcome.fault["code"] == FaultCode.INVALID_CONFIGURATION.usp
        assert "searchable by others" in outcome.fault["message"]
        assert rows(dsm, DU) == [] and tree_files(dsm.state / "bundles") == []
    finally:
        dsm.cleanup()


def test_a_lost_spec_is_recomputed_and_persisted_again(dsm: DsmDaemon) -> None:
    eu, _pid = started(dsm, archive(dsm.work, "respec"))
    euid = dsm.get(eu + "EUID")[eu + "EUID"]
    (persisted,) = dsm.work.glob(f"bundles/*/*/.dsm-spec/{euid}.json")
    before = persisted.read_text()
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Idle"}).ok
    wait_status(dsm, eu, "Idle")
    persisted.unlink()
    assert operate(dsm, eu + "SetRequestedState()", {"RequestedState": "Active"}).ok
    wait_status(dsm, eu, "Active")
    assert persisted.read_text() == before
