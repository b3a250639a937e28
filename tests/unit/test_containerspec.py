"""The container-spec layer as a pure function: bundle config + inputs + policy + context → spec."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec, summarize
from dsm_tr181.containerspec.defaults import DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from dsm_tr181.containerspec.seccomp import DENIED
from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.confinement import first_free, shift_ownership
from dsm_tr181.sample_bundle import oci_config

pytestmark = pytest.mark.unit

CONTEXT = SpecContext("default", "default-1", "/dsm-1234/default/default-1", "x86_64")


def bundle(**changes: Any) -> dict[str, Any]:
    config = oci_config(["/bin/app"])
    config.update(changes)
    return config


def derive(config: dict[str, Any], policy: ConfinementPolicy | None = None, **inputs: Any) -> dict[str, Any]:
    return effective_spec(config, "/b/1/g1", EuInputs(**inputs), policy or ConfinementPolicy(), CONTEXT)


def refusal(config: dict[str, Any], policy: ConfinementPolicy | None = None, **inputs: Any) -> Fault:
    with pytest.raises(Fault) as caught:
        derive(config, policy, **inputs)
    return caught.value


def test_a_benign_bundle_gets_the_defaults() -> None:
    config = bundle()
    del config["process"]["capabilities"]
    config["process"]["noNewPrivileges"] = False
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}  # the bundle's own: replaced
    spec = derive(config)
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)
    assert caps["inheritable"] == caps["ambient"] == []
    assert spec["process"]["noNewPrivileges"] is True
    assert {ns["type"] for ns in spec["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert all("path" not in ns for ns in spec["linux"]["namespaces"])
    assert set(MASKED_PATHS) <= set(spec["linux"]["maskedPaths"])
    assert set(READONLY_PATHS) <= set(spec["linux"]["readonlyPaths"])
    seccomp = spec["linux"]["seccomp"]
    assert seccomp["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"mount", "unshare", "setns", "ptrace", "bpf", "init_module"} <= set(seccomp["syscalls"][0]["names"])
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {(r["major"], r.get("minor")) for r in rules[1:]} == {
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (136, None),
    }
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.index("/dev") < destinations.index("/dev/mqueue") < len(destinations)
    assert spec["linux"]["devices"] == [] and "sysctl" not in spec["linux"] and "hooks" not in spec
    assert spec["linux"]["cgroupsPath"] == "/dsm-1234/default/default-1"
    assert spec["root"] == {"path": "/b/1/g1/rootfs", "readonly": True}
    assert all(m["type"] != "bind" and "bind" not in m.get("options", []) for m in spec["mounts"])
    assert {m["destination"] for m in spec["mounts"]} >= {"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp"}
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"] and "nosuid" in sysfs["options"]


def test_the_function_is_pure() -> None:
    config = bundle()
    before = copy.deepcopy(config)
    assert derive(config) == derive(config)
    assert config == before


def test_every_offending_item_is_named_in_one_fault() -> None:
    config = bundle(hooks={"poststart": [{"path": "/bin/evil"}]}, rdkPlugins={"networking": {}, "logging": {}})
    config["process"]["capabilities"]["effective"] += ["CAP_SYS_ADMIN", "CAP_SYS_MODULE"]
    config["mounts"].append({"destination": "/h", "type": "bind", "source": "/", "options": ["rbind"]})
    config["mounts"].append({"destination": "/d", "type": "ext4", "source": "/dev/sda1"})
    config["linux"]["namespaces"] = [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}]
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    fault = refusal(config)
    assert fault.code is FaultCode.DU_EE_MISMATCH
    for item in (
        "capability CAP_SYS_ADMIN", "capability CAP_SYS_MODULE", "host mount / at /h",
        "mount of type ext4 from /dev/sda1 at /d", "the host's ipc namespace", "the host's uts namespace",
        "the host's mount namespace", "joining the network namespace /proc/1/ns/net", "sysctl net.ipv4.ip_forward",
        "poststart hook /bin/evil", "Dobby plugin networking", "its own user-namespace ID mapping",
    ):  # fmt: skip
        assert item in fault.message, item
    assert "Dobby plugin logging" not in fault.message


def test_the_allow_list_admits_exactly_what_it_names() -> None:
    policy = ConfinementPolicy(
        allowed_host_paths=("/run/app",),
        allowed_devices=("/dev/ttyUSB0",),
        extra_capabilities=("CAP_NET_ADMIN",),
        allowed_rdk_plugins=("gpu",),
    )
    config = bundle(rdkPlugins={"gpu": {"data": {}}})
    config["process"]["capabilities"]["effective"].append("CAP_NET_ADMIN")
    config["mounts"].append({"destination": "/s", "type": "bind", "source": "/run/app/sock", "options": ["bind"]})
    config["linux"]["devices"] = [{"path": "/dev/ttyUSB0", "type": "c", "major": 188, "minor": 0}]
    config["linux"]["resources"] = {"devices": [{"allow": True, "type": "c", "major": 188, "minor": 0,
                                                 "access": "rw"}]}  # fmt: skip
    spec = derive(config, policy)
    assert "CAP_NET_ADMIN" in spec["process"]["capabilities"]["effective"]
    assert spec["linux"]["devices"][0]["path"] == "/dev/ttyUSB0"
    assert spec["linux"]["resources"]["devices"][-1]["major"] == 188
    assert spec["rdkPlugins"] == {"gpu": {"data": {}}}
    assert summarize(spec)["host_mounts"] == ["/run/app/sock:/s"]
    # ... and nothing beside it: a neighbour path, another device number.
    config["mounts"][-1]["source"] = "/run/application"
    config["linux"]["resources"]["devices"][0]["minor"] = 1
    message = refusal(config, policy).message
    assert "host mount /run/application at /s" in message and "device access c 188:1 rw" in message


def test_privileged_needs_the_policy_and_then_runs_as_asked() -> None:
    config = bundle(hooks={"prestart": [{"path": "/bin/setup"}]})
    config["linux"]["namespaces"] = [{"type": "mount"}]
    assert refusal(config, privileged=True).code is FaultCode.REQUEST_DENIED
    spec = derive(config, ConfinementPolicy(allow_privileged=True), privileged=True)
    assert spec["hooks"] == config["hooks"] and spec["linux"]["namespaces"] == [{"type": "mount"}]
    assert spec["root"]["path"] == "/b/1/g1/rootfs" and spec["linux"]["cgroupsPath"] == CONTEXT.cgroup_path
    assert summarize(spec)["mode"] == "privileged"
    # The policy alone grants nothing: an unprivileged EU of that ExecEnv is still confined.
    assert refusal(config, ConfinementPolicy(allow_privileged=True)).code is FaultCode.DU_EE_MISMATCH


def test_user_namespace_mapping_comes_from_the_context() -> None:
    context = SpecContext("userns", "userns-3", "/d/userns/userns-3", "aarch64", uid_base=1_065_536, uid_count=1000)
    spec = effective_spec(bundle(), "/b", EuInputs(), ConfinementPolicy(user_namespace=True), context)
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1_065_536, "size": 1000}]
    assert spec["linux"]["gidMappings"] == spec["linux"]["uidMappings"]
    assert spec["linux"]["seccomp"]["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert summarize(spec)["user_namespace"] == "0-999 -> 1065536-1066535"


def test_the_seccomp_list_has_no_duplicates() -> None:
    assert len(DENIED) == len(set(DENIED))


def test_policy_values_are_checked() -> None:
    for bad in ({"allowed_host_paths": ("relative",)}, {"allowed_host_paths": ("/",)},
                {"allowed_devices": ("/etc/passwd",)}, {"extra_capabilities": ("CAP_NOPE",)}):  # fmt: skip
        with pytest.raises(ValueError):
            ConfinementPolicy(**bad)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)), max_size=20), st.integers(1, 700))
def test_uid_ranges_never_overlap(taken: list[tuple[int, int]], size: int) -> None:
    start = first_free(100, size, taken)
    assert start >= 100
    for base, count in taken:
        assert start + size <= base or base + count <= start


def test_shifting_ownership_never_touches_a_shared_layer_file(tmp_path: Path) -> None:
    """Image layers are hard-linked into every DU using them: a user-namespaced DU gets its
    own copy of a file before its owner changes."""
    store, rootfs = tmp_path / "layers", tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    store.mkdir()
    (store / "shared").write_text("layer")
    os.link(store / "shared", rootfs / "bin" / "shared")
    (rootfs / "own").write_text("mine")
    shift_ownership(rootfs, 1_000_000, 65536)
    assert os.lstat(store / "shared").st_uid == 0 and os.lstat(store / "shared").st_nlink == 1
    assert os.lstat(rootfs / "bin" / "shared").st_uid == 1_000_000
    assert (rootfs / "bin" / "shared").read_text() == "layer"
    assert os.lstat(rootfs / "own").st_uid == 1_000_000 and os.lstat(rootfs).st_gid == 1_000_000
