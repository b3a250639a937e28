"""The effective confinement of a spec, as an operator reads it (``dsmcli eu.detail``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsm_tr181.containerspec.derive import MARK
from dsm_tr181.containerspec.review import is_bind


def summarize(spec: Mapping[str, Any]) -> dict[str, Any]:
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    seccomp = linux.get("seccomp")
    uid_map = (linux.get("uidMappings") or [{}])[0]
    return {
        "mode": (spec.get("annotations") or {}).get(MARK, "unknown"),
        "capabilities": list((process.get("capabilities") or {}).get("effective", [])),
        "no_new_privileges": bool(process.get("noNewPrivileges")),
        "namespaces": sorted(
            ns["type"] + (f"={ns['path']}" if ns.get("path") else "") for ns in linux.get("namespaces", [])
        ),
        "seccomp": _seccomp(seccomp),
        "user_namespace": (
            f"0-{uid_map['size'] - 1} -> {uid_map['hostID']}-{uid_map['hostID'] + uid_map['size'] - 1}"
            if uid_map
            else "none"
        ),
        "host_mounts": [f"{m.get('source')}:{m.get('destination')}" for m in spec.get("mounts", []) if is_bind(m)],
        "devices": [str(d.get("path")) for d in linux.get("devices", [])],
        "readonly_rootfs": bool((spec.get("root") or {}).get("readonly")),
        "cgroup": str(linux.get("cgroupsPath", "")),
    }


def _seccomp(profile: Mapping[str, Any] | None) -> str:
    if not profile:
        return "none"
    rules = profile.get("syscalls", [])
    names = {name for rule in rules for name in rule.get("names", [])}
    if profile.get("defaultAction") == "SCMP_ACT_ALLOW" and all(r.get("action") == "SCMP_ACT_ERRNO" for r in rules):
        return f"deny list: {len(names)} system calls refused (some only with certain arguments)"
    return f"default {profile.get('defaultAction')}, {len(rules)} rules on {len(names)} system calls"
