"""The cgroup-v2 files the limits and the monitoring write and read, against a directory laid
out as a cgroup2 hierarchy with the memory and cpu controllers.

A stand-in: this hybrid host binds memory and cpu to cgroup v1, so its real v2 hierarchy
cannot have them (tests/integration/test_cgroup_v2.py runs crun in cgroup v2 for what it
can, and these same cases for real where the controllers are in v2). The tree holds the
files the kernel shows there, with the names and formats of cgroup-v2.rst.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.runtimes.cgroup_limits import apply_parent, oom_kills
from dsm_tr181.runtimes.cgroups import _V2, sample_usage

pytestmark = pytest.mark.unit

CONTAINER = "/dsm-x/ee/eu1"
RESOURCES = {"memory": {"limit": 64 << 20}, "cpu": {"quota": 50_000, "period": 100_000}}


def hierarchy(
    root: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc"
) -> dict[str, tuple[str, Path]]:
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return {_V2: ("/", root)}


def test_the_execenv_parent_gets_memory_max_and_cpu_max_and_delegates_them(tmp_path: Path) -> None:
    mounts = hierarchy(tmp_path)
    written = apply_parent(CONTAINER, RESOURCES, unified=True, mounts=mounts)
    parent = tmp_path / "dsm-x" / "ee"
    assert written == [parent / "memory.max", parent / "cpu.max"]
    assert (parent / "memory.max").read_text() == str(64 << 20)
    assert (parent / "cpu.max").read_text() == "50000 100000"
    # Every level down to the parent itself hands memory and cpu to the level below it.
    for level in (tmp_path, tmp_path / "dsm-x", parent):
        assert (level / "cgroup.subtree_control").read_text() == "+memory +cpu"


def test_no_allocation_writes_unlimited(tmp_path: Path) -> None:
    apply_parent(CONTAINER, {}, unified=True, mounts=hierarchy(tmp_path))
    parent = tmp_path / "dsm-x" / "ee"
    assert (parent / "memory.max").read_text() == "max"
    assert (parent / "cpu.max").read_text() == "max 100000"


def test_a_limit_without_its_controller_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(Fault) as caught:
        apply_parent(CONTAINER, RESOURCES, unified=True, mounts=hierarchy(tmp_path, "cpu pids"))
    assert caught.value.code == FaultCode.SYSTEM_RESOURCES_EXCEEDED
    assert "no memory controller" in caught.value.message


def test_an_oom_kill_is_counted_from_memory_events(tmp_path: Path) -> None:
    mounts = hierarchy(tmp_path)
    eu = tmp_path / "dsm-x" / "ee" / "eu1"
    eu.mkdir(parents=True)
    (eu / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert oom_kills(CONTAINER, unified=True, mounts=mounts) == 1
    (eu / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
    assert oom_kills(CONTAINER, unified=True, mounts=mounts) == 0


def test_usage_is_memory_current_less_inactive_file_and_cpu_stat(tmp_path: Path) -> None:
    eu = tmp_path / "eu1"
    eu.mkdir()
    (eu / "memory.current").write_text(f"{10 << 20}\n")
    (eu / "memory.stat").write_text(f"anon {6 << 20}\nfile {4 << 20}\nactive_file {1 << 20}\ninactive_file {3 << 20}\n")
    (eu / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (eu / "cgroup.procs").write_text("4242\n4243\n")
    sample = sample_usage(4242, {_V2: eu}, with_age=False)
    assert (sample.memory_kib, sample.cpu_usec, sample.pids) == (7 * 1024, 1_500_000, (4242, 4243))


def test_a_container_whose_cgroup_is_gone_has_no_usage(tmp_path: Path) -> None:
    sample = sample_usage(4242, {_V2: tmp_path / "removed"}, with_age=False)
    assert (sample.memory_kib, sample.pids) == (-1, ())
