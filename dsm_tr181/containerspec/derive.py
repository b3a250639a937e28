"""The effective OCI runtime spec of an execution unit: a pure function of its inputs.

``effective_spec(bundle config, bundle directory, EU inputs, ExecEnv policy, context)``
returns the spec the runtime runs — the same for runc, crun and Dobby — or raises the
fault that refuses the bundle. The LCM computes it at install and update (so a bundle that
asks too much is refused before anything runs), persists it with the EU, and recomputes it
only if the persisted copy is missing.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsm_tr181.containerspec import hostobjects, review
from dsm_tr181.containerspec.defaults import (
    CAPABILITY_SETS,
    DEFAULT_CAPABILITIES,
    DEFAULT_DEVICE_RULES,
    MASKED_PATHS,
    NAMESPACES,
    READONLY_PATHS,
    default_mounts,
)
from dsm_tr181.containerspec.hostobjects import HostObject
from dsm_tr181.containerspec.policy import ConfinementPolicy
from dsm_tr181.containerspec.resources import Limits, eu_resources
from dsm_tr181.containerspec.seccomp import default_profile
from dsm_tr181.errors import Fault, FaultCode

OCI_VERSION = "1.0.2"
# process members taken from the bundle as they are (capabilities and noNewPrivileges are decided here).
PROCESS_KEYS = ("terminal", "consoleSize", "user", "args", "env", "cwd", "rlimits", "apparmorProfile",
                "selinuxLabel", "oomScoreAdj")  # fmt: skip
LINUX_KEYS = ("resources", "mountLabel", "personality")
MARK = "org.rdk.dsm.confinement"  # annotation naming how the spec was made


@dataclass(frozen=True)
class EuInputs:
    """What InstallDU()/Update() said of the EU."""

    privileged: bool = False
    resources: Limits = field(default_factory=Limits)  # Resources.* (KiB, %)
    env: tuple[tuple[str, str], ...] = ()  # EnvVariable.{i} Key, Value
    host_objects: tuple[HostObject, ...] = ()  # HostObject.{i}
    volumes: tuple[tuple[str, str], ...] = ()  # (host directory, AccessPath) of its data volumes
    # Its network mode: "None" (a namespace of its own: loopback only, or the bundle's when
    # privileged), "Bridged" (join SpecContext.network), "ShareParent" (the host's: policy)
    network_mode: str = "None"


@dataclass(frozen=True)
class SpecContext:
    """What the daemon decides for this EU."""

    execenv: str
    container_id: str
    cgroup_path: str  # "/<daemon instance>/<execenv>/<container id>"
    arch: str  # uname -m, for the seccomp architectures
    uid_base: int = 0  # first host UID/GID of the EU's user namespace (0: none)
    uid_count: int = 0
    execenv_limits: Limits = field(default_factory=Limits)  # the ExecEnv's Allocated* (its parent cgroup's limits)
    cpus: int = 1  # CPUs of the device, for CPU percentages
    # a Bridged EU's network namespace to join (made by the daemon before the start)
    network: str = ""
    etc_files: tuple[tuple[str, str], ...] = ()  # (host file, /etc/... path): hosts, resolv.conf, ...


def effective_spec(
    config: Mapping[str, Any],
    bundle_dir: str,
    inputs: EuInputs,
    policy: ConfinementPolicy,
    context: SpecContext,
) -> dict[str, Any]:
    """The spec to run; Fault when the bundle or the inputs ask for more than ``policy`` allows."""
    rootfs = _rootfs(config, bundle_dir)
    if inputs.privileged:
        if not policy.allow_privileged:
            raise Fault(
                FaultCode.REQUEST_DENIED,
                f"execution environment {context.execenv!r} does not allow privileged execution units",
            )
        spec = copy.deepcopy(dict(config))
        spec["root"] = {**_dict(config.get("root")), "path": rootfs}
        spec.setdefault("linux", {})["cgroupsPath"] = context.cgroup_path
        spec.setdefault("annotations", {})[MARK] = "privileged"
        _add_inputs(spec, inputs, None, context)
        _network(spec, inputs.network_mode, policy, context)
        return spec
    found = review.offences(config, policy)
    if found:
        raise Fault(
            FaultCode.DU_EE_MISMATCH,
            f"the bundle asks for more than execution environment {context.execenv!r} allows: {'; '.join(found)}",
        )
    spec = _confined(config, rootfs, policy, context)
    _add_inputs(spec, inputs, policy, context)
    _network(spec, inputs.network_mode, policy, context)
    return spec


def _add_inputs(spec: dict[str, Any], inputs: EuInputs, policy: ConfinementPolicy | None, context: SpecContext) -> None:
    """What InstallDU() asked beyond the bundle: limits, environment, host objects."""
    linux = spec.setdefault("linux", {})
    resources = eu_resources(linux.get("resources"), context.execenv_limits, inputs.resources, context.cpus,
                             context.execenv)  # fmt: skip
    if resources:
        linux["resources"] = resources
    if inputs.env:
        process = spec.setdefault("process", {})
        process["env"] = hostobjects.merge_env(process.get("env"), inputs.env)
    if inputs.host_objects:
        hostobjects.apply(spec, inputs.host_objects, policy, context.execenv)
    for source, destination in inputs.volumes:  # the daemon's own volumes: no policy applies
        spec.setdefault("mounts", []).append(
            {"destination": destination, "type": "bind", "source": source,
             "options": ["rbind", "rw", "nosuid", "nodev"]}
        )  # fmt: skip


def _confined(
    config: Mapping[str, Any], rootfs: str, policy: ConfinementPolicy, context: SpecContext
) -> dict[str, Any]:
    bundle_process = _dict(config.get("process"))
    bundle_linux = _dict(config.get("linux"))
    process = {key: copy.deepcopy(bundle_process[key]) for key in PROCESS_KEYS if key in bundle_process}
    process["capabilities"] = _capabilities(bundle_process.get("capabilities"))
    process["noNewPrivileges"] = True
    linux: dict[str, Any] = {key: copy.deepcopy(bundle_linux[key]) for key in LINUX_KEYS if key in bundle_linux}
    resources = linux.setdefault("resources", {})
    resources["devices"] = [copy.deepcopy(rule) for rule in DEFAULT_DEVICE_RULES] + [
        rule for rule in resources.get("devices", []) if isinstance(rule, dict) and rule.get("allow")
    ]
    linux["devices"] = copy.deepcopy(bundle_linux.get("devices", []))
    namespaces = [{"type": kind} for kind in NAMESPACES]
    if policy.user_namespace:
        if context.uid_count <= 0:
            raise ValueError("a user namespace needs a UID range")
        namespaces.append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": context.uid_base, "size": context.uid_count}]
        linux["uidMappings"], linux["gidMappings"] = mapping, copy.deepcopy(mapping)
    linux["namespaces"] = namespaces
    linux["maskedPaths"] = _union(MASKED_PATHS, bundle_linux.get("maskedPaths"))
    linux["readonlyPaths"] = _union(READONLY_PATHS, bundle_linux.get("readonlyPaths"))
    linux["seccomp"] = default_profile(context.arch)
    linux["cgroupsPath"] = context.cgroup_path
    linux["rootfsPropagation"] = "rprivate"
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": bool(_dict(config.get("root")).get("readonly", False))},
        "hostname": str(config.get("hostname") or context.container_id),
        "mounts": _mounts(config.get("mounts")),
        "annotations": {**_dict(config.get("annotations")), MARK: "default"},
        "linux": linux,
    }
    plugins = {name: copy.deepcopy(value) for name, value in _dict(config.get("rdkPlugins")).items()}
    if plugins:
        spec["rdkPlugins"] = plugins
    return spec


def _network(spec: dict[str, Any], mode: str, policy: ConfinementPolicy, context: SpecContext) -> None:
    """The EU's network mode replaces its own network namespace: the host's (ShareParent, where
    the policy allows it) or the bridged one the daemon made; None keeps the namespace it has."""
    if mode == "None":
        return
    if mode == "ShareParent" and not policy.allow_share_parent_network:
        raise Fault(
            FaultCode.REQUEST_DENIED,
            f"execution environment {context.execenv!r} does not allow units to share its network",
        )
    if mode == "Bridged" and not context.network:
        raise Fault(FaultCode.REQUEST_DENIED, f"execution environment {context.execenv!r} has no bridged network")
    if mode not in ("ShareParent", "Bridged"):
        raise ValueError(f"unknown network mode {mode!r}")
    linux = spec.setdefault("linux", {})
    others = [ns for ns in linux.get("namespaces", []) if ns.get("type") != "network"]
    joined = [{"type": "network", "path": context.network}] if mode == "Bridged" else []
    linux["namespaces"] = [*others, *joined]
    for source, destination in context.etc_files:
        spec.setdefault("mounts", []).append(
            {"destination": destination, "type": "bind", "source": source, "options": ["bind", "ro", "nosuid", "nodev"]}
        )


def _rootfs(config: Mapping[str, Any], bundle_dir: str) -> str:
    path = str(_dict(config.get("root")).get("path", "rootfs"))
    return posixpath.normpath(posixpath.join(bundle_dir, path))


def _capabilities(asked: Any) -> dict[str, list[str]]:
    """The bundle's own sets (already checked against the policy), else the default set."""
    if not isinstance(asked, Mapping):
        granted = list(DEFAULT_CAPABILITIES)
        return {"bounding": granted, "effective": granted, "permitted": granted, "inheritable": [], "ambient": []}
    sets = {kind: sorted({str(name) for name in asked.get(kind) or []}) for kind in CAPABILITY_SETS}
    sets["inheritable"] = []  # as Docker does since CVE-2022-24769
    return sets


def _mounts(asked: Any) -> list[dict[str, Any]]:
    mounts = [copy.deepcopy(m) for m in asked if isinstance(m, dict)] if isinstance(asked, list) else []
    taken = {posixpath.normpath(str(m.get("destination", ""))) for m in mounts}
    defaults = [m for m in default_mounts() if m["destination"] not in taken]
    for mount in mounts:
        if not review.is_bind(mount):  # no setuid files or device nodes from a kernel filesystem...
            options = [str(option) for option in mount.get("options", [])]
            devices = mount.get("type") == "devpts" or posixpath.normpath(str(mount.get("destination"))) == "/dev"
            wanted = ("nosuid",) if devices else ("nosuid", "nodev")  # ... but /dev and the terminals
            mount["options"] = options + [flag for flag in wanted if flag not in options]
    # A mount must come after the one it sits in (/dev before /dev/mqueue): by depth, stable.
    return sorted(defaults + mounts, key=lambda m: posixpath.normpath(str(m.get("destination", "/"))).count("/"))


def _union(base: tuple[str, ...], extra: Any) -> list[str]:
    more = [str(path) for path in extra if isinstance(path, str)] if isinstance(extra, list) else []
    return list(dict.fromkeys([*base, *more]))


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}
