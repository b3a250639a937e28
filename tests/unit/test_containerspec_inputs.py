"""InstallDU() inputs in the effective spec: Resources.* (never above the ExecEnv's),
EnvVariable.{i} and HostObject.{i} within the ExecEnv's policy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from dsm_tools.sample_bundle import oci_config

from dsm_tr181.containerspec import ConfinementPolicy, EuInputs, SpecContext, effective_spec
from dsm_tr181.containerspec.hostobjects import HostObject
from dsm_tr181.containerspec.resources import Limits, cpu_quota_us, execenv_resources, lowered, memory_limit_kib
from dsm_tr181.errors import Fault, FaultCode

pytestmark = pytest.mark.unit

MiB = 1 << 20
CONTEXT = SpecContext("default", "default-1", "/dsm-1234/default/default-1", "x86_64", cpus=4)
POLICY = ConfinementPolicy(allowed_host_paths=("/srv/shared",), allowed_devices=("/dev/ttyS0",))


def derive(config: dict[str, Any] | None = None, context: SpecContext = CONTEXT, **inputs: Any) -> dict[str, Any]:
    return effective_spec(config or oci_config(["/bin/app"]), "/b/1/g1", EuInputs(**inputs), POLICY, context)


def refused(**inputs: Any) -> Fault:
    with pytest.raises(Fault) as caught:
        derive(context=replace(CONTEXT, execenv_limits=Limits(65536, 50, 1024)), **inputs)
    return caught.value


def test_eu_limits_become_memory_and_cfs_quota() -> None:
    spec = derive(resources=Limits(memory_kib=32768, cpu_percent=25))
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 32 * MiB}
    assert resources["cpu"] == {"quota": 100_000, "period": 100_000}  # a quarter of 4 CPUs
    assert memory_limit_kib(spec) == 32768


def test_an_eu_cpu_share_is_a_share_of_its_execenv() -> None:
    context = replace(CONTEXT, execenv_limits=Limits(cpu_percent=50))  # 2 of the 4 CPUs
    assert derive(context=context, resources=Limits(cpu_percent=50))["linux"]["resources"]["cpu"]["quota"] == 100_000
    assert derive(context=context)["linux"]["resources"]["cpu"]["quota"] == 200_000  # the EE's ceiling
    assert execenv_resources(Limits(memory_kib=1024, cpu_percent=50), 4) == {
        "memory": {"limit": MiB},
        "cpu": {"quota": 200_000, "period": 100_000},
    }
    assert execenv_resources(Limits(), 4) == {}


def test_a_bundle_limit_is_lowered_to_the_execenv_allocation_never_raised() -> None:
    config = oci_config(["/bin/app"])
    config["linux"]["resources"] = {"memory": {"limit": 512 * MiB, "swap": 1024 * MiB}, "cpu": {"shares": 512}}
    context = replace(CONTEXT, execenv_limits=Limits(memory_kib=65536))
    resources = derive(config, context)["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 * MiB}
    assert resources["cpu"] == {"shares": 512}
    config["linux"]["resources"] = {"memory": {"limit": 16 * MiB}}
    assert derive(config, context)["linux"]["resources"]["memory"] == {"limit": 16 * MiB}


def test_inputs_above_the_execenv_allocation_are_refused() -> None:
    for limits, named in ((Limits(memory_kib=65537), "AllocatedMemory"), (Limits(disk_kib=2048), "AllocatedDisk")):
        fault = refused(resources=limits)
        assert fault.code is FaultCode.SYSTEM_RESOURCES_EXCEEDED and named in fault.message


def test_environment_variables_replace_or_join_the_bundles() -> None:
    spec = derive(env=(("TERM", "dumb"), ("GREETING", "hello world")))
    assert spec["process"]["env"] == ["PATH=/bin", "TERM=dumb", "GREETING=hello world"]
    with pytest.raises(Fault) as caught:
        derive(env=(("A=B", "c"),))
    assert caught.value.code is FaultCode.INVALID_ARGUMENTS


def test_host_objects_within_the_policy_become_mounts_and_devices() -> None:
    objects = (
        HostObject("/srv/shared/data", "/data"),
        HostObject("/srv/shared/out", "/out", "rw"),
        HostObject("/dev/ttyS0", "/dev/ttyS0", "", ("c", 4, 64)),
    )
    spec = derive(host_objects=objects)
    binds = [m for m in spec["mounts"] if m.get("type") == "bind"]
    assert [(m["source"], m["destination"], m["options"]) for m in binds] == [
        ("/srv/shared/data", "/data", ["rbind", "ro", "nosuid", "nodev"]),
        ("/srv/shared/out", "/out", ["rbind", "rw", "nosuid", "nodev"]),
    ]
    assert spec["linux"]["devices"] == [
        {"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64, "fileMode": 0o660, "uid": 0, "gid": 0}
    ]
    assert {"allow": True, "type": "c", "major": 4, "minor": 64, "access": "rw"} in spec["linux"]["resources"][
        "devices"
    ]


def test_host_objects_outside_the_policy_are_refused_together() -> None:
    objects = (
        HostObject("/etc", "/host-etc"),
        HostObject("/dev/sda", "/dev/sda", "", ("b", 8, 0)),
        HostObject("/srv/shared/ok", "/ok"),
    )
    fault = refused(host_objects=objects)
    assert fault.code is FaultCode.DU_EE_MISMATCH
    assert (
        "host path /etc" in fault.message
        and "device /dev/sda" in fault.message
        and "/srv/shared/ok" not in fault.message
    )
    with pytest.raises(Fault) as caught:
        derive(host_objects=(HostObject("/srv/shared/../../etc", "/x"),))
    assert caught.value.code is FaultCode.INVALID_ARGUMENTS


def test_the_eus_network_mode_replaces_its_namespace() -> None:
    bridged = derive(context=replace(CONTEXT, network="/run/netns/dsm-1-default-1",
                                     etc_files=(("/b/1/g1/.dsm-spec/default-1.etc/hosts", "/etc/hosts"),)),
                     network_mode="Bridged")  # fmt: skip
    namespaces = bridged["linux"]["namespaces"]
    assert [ns for ns in namespaces if ns["type"] == "network"] == [
        {"type": "network", "path": "/run/netns/dsm-1-default-1"}
    ]
    assert {"destination": "/etc/hosts", "type": "bind", "source": "/b/1/g1/.dsm-spec/default-1.etc/hosts",
            "options": ["bind", "ro", "nosuid", "nodev"]} in bridged["mounts"]  # fmt: skip
    # The host's network: only where the policy allows it, even for a privileged EU.
    config = oci_config(["/bin/app"])
    for privileged in (False, True):
        inputs = EuInputs(network_mode="ShareParent", privileged=privileged)
        with pytest.raises(Fault) as caught:
            effective_spec(config, "/b/1/g1", inputs, replace(POLICY, allow_privileged=True), CONTEXT)
        assert caught.value.code is FaultCode.REQUEST_DENIED and "share its network" in caught.value.message
    allowing = replace(POLICY, allow_share_parent_network=True)
    shared = effective_spec(config, "/b/1/g1", EuInputs(network_mode="ShareParent"), allowing, CONTEXT)
    assert "network" not in {ns["type"] for ns in shared["linux"]["namespaces"]}
    with pytest.raises(Fault):  # Bridged without the daemon's namespace
        derive(network_mode="Bridged")
    private = derive()
    assert {"type": "network"} in private["linux"]["namespaces"]


def test_lowered_only_ever_lowers_and_leaves_the_input_alone() -> None:
    """What an ExecEnv without a parent cgroup shares out (lcm/admission.py share_out)."""
    spec = derive(resources=Limits(memory_kib=32768, cpu_percent=25))  # 32 MiB, 100 ms quota
    before = repr(spec)
    less = lowered(spec, 16384, 40_000)
    assert (memory_limit_kib(less), cpu_quota_us(less)) == (16384, 40_000)
    assert repr(spec) == before
    more = lowered(spec, 65536, 200_000)  # never raised
    assert (memory_limit_kib(more), cpu_quota_us(more)) == (32768, 100_000)
    unbounded = derive()  # no limits at all: the remainder becomes them
    assert (memory_limit_kib(unbounded), cpu_quota_us(unbounded)) == (-1, -1)
    bounded = lowered(unbounded, 1024, 5_000)
    assert (memory_limit_kib(bounded), cpu_quota_us(bounded)) == (1024, 5_000)
    assert lowered(unbounded, -1, -1)["linux"]["resources"] == unbounded["linux"]["resources"]
