"""What a bundle asks for beyond an unprivileged execution unit's rights.

A bundle that asks for more than its ExecEnv's policy grants is refused as a whole (at
install and update), with one message listing every offending item, rather than run with
parts silently stripped: the operator learns why an application would not work. Only what
cannot widen the container is adjusted silently: ``noNewPrivileges`` is always set, the
default masked/read-only paths are added, the bundle's own seccomp profile is replaced by
the default one (see :mod:`.seccomp`) and missing default mounts and namespaces are added.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from dsm_tr181.containerspec.defaults import (
    CAPABILITY_SETS,
    DEFAULT_CAPABILITIES,
    KERNEL_FILESYSTEMS,
    NAMESPACES,
    READ_ONLY_FILESYSTEMS,
)
from dsm_tr181.containerspec.policy import ConfinementPolicy

HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
# Dobby's logging plugin is always replaced by the adapter's own (output goes to the EU's log).
ALWAYS_ALLOWED_PLUGINS = frozenset({"logging"})
# A missing namespace means sharing the host's (cgroup and user are added, never required).
REQUIRED_NAMESPACES = tuple(ns for ns in NAMESPACES if ns != "cgroup")


def offences(config: Mapping[str, Any], policy: ConfinementPolicy) -> list[str]:
    """Every item of ``config`` an unprivileged EU of this policy may not have ([] if none)."""
    found: list[str] = []
    process = _mapping(config.get("process"))
    linux = _mapping(config.get("linux"))
    found += _capabilities(_mapping(process.get("capabilities")), policy)
    found += _mounts(config.get("mounts"), policy)
    found += _namespaces(linux.get("namespaces"))
    found += _devices(linux, policy)
    for name in sorted(_mapping(linux.get("sysctl"))):
        found.append(f"sysctl {name}")
    hooks = _mapping(config.get("hooks"))
    for kind in HOOKS:
        for hook in _list(hooks.get(kind)):
            found.append(f"{kind} hook {_mapping(hook).get('path', '?')}")
    allowed_plugins = ALWAYS_ALLOWED_PLUGINS | set(policy.allowed_rdk_plugins)
    for plugin in sorted(set(_mapping(config.get("rdkPlugins"))) - allowed_plugins):
        found.append(f"Dobby plugin {plugin}")
    if linux.get("uidMappings") or linux.get("gidMappings"):
        found.append("its own user-namespace ID mapping")
    score = process.get("oomScoreAdj")
    if isinstance(score, int) and score < 0:
        found.append(f"oomScoreAdj {score} (protection from the OOM killer)")
    if linux.get("rootfsPropagation") in ("shared", "rshared"):
        found.append(f"{linux['rootfsPropagation']} root propagation")
    if process.get("apparmorProfile") == "unconfined":
        found.append("AppArmor profile unconfined")
    return found


def allowed_capabilities(policy: ConfinementPolicy) -> frozenset[str]:
    return frozenset(DEFAULT_CAPABILITIES) | frozenset(policy.extra_capabilities)


def is_bind(mount: Mapping[str, Any]) -> bool:
    options = [str(option) for option in _list(mount.get("options"))]
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _capabilities(capabilities: Mapping[str, Any], policy: ConfinementPolicy) -> list[str]:
    allowed = allowed_capabilities(policy)
    asked = {str(name) for kind in CAPABILITY_SETS for name in _list(capabilities.get(kind))}
    return [f"capability {name}" for name in sorted(asked - allowed)]


def _mounts(mounts: Any, policy: ConfinementPolicy) -> list[str]:
    found = []
    for item in _list(mounts):
        mount = _mapping(item)
        destination = str(mount.get("destination", "?"))
        source = str(mount.get("source", ""))
        kind = str(mount.get("type", ""))
        options = [str(option) for option in _list(mount.get("options"))]
        if is_bind(mount):
            if not policy.allows_host_path(source):
                found.append(f"host mount {source or '?'} at {destination}")
        elif kind not in KERNEL_FILESYSTEMS:
            found.append(f"mount of type {kind or '(none)'} from {source or '?'} at {destination}")
        elif kind in READ_ONLY_FILESYSTEMS and "ro" not in options:
            found.append(f"read-write {kind} at {destination}")
    return found


def _namespaces(namespaces: Any) -> list[str]:
    found = []
    listed = [_mapping(entry) for entry in _list(namespaces)]
    types = {str(entry.get("type")) for entry in listed}
    for kind in REQUIRED_NAMESPACES:
        if kind not in types:
            found.append(f"the host's {kind} namespace")
    for entry in listed:
        if entry.get("path"):
            found.append(f"joining the {entry.get('type')} namespace {entry['path']}")
    return found


def _devices(linux: Mapping[str, Any], policy: ConfinementPolicy) -> list[str]:
    found = []
    granted: set[tuple[str, int, int]] = set()
    for item in _list(linux.get("devices")):
        device = _mapping(item)
        path = str(device.get("path", "?"))
        if posixpath.normpath(path) not in policy.allowed_devices:
            found.append(f"device {path}")
        else:
            granted.add((str(device.get("type", "")), _number(device.get("major")), _number(device.get("minor"))))
    for item in _list(_mapping(linux.get("resources")).get("devices")):
        rule = _mapping(item)
        if not rule.get("allow"):
            continue
        key = (str(rule.get("type", "a")), _number(rule.get("major")), _number(rule.get("minor")))
        if key not in granted:
            major = "*" if rule.get("major") is None else rule["major"]
            minor = "*" if rule.get("minor") is None else rule["minor"]
            found.append(f"device access {key[0]} {major}:{minor} {rule.get('access', 'rwm')}")
    return found


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
