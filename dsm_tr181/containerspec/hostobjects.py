"""InstallDU()'s ``HostObject.{i}`` and ``EnvVariable.{i}`` inputs in OCI terms.

A host object whose Source is a device node (``/dev/...``) becomes a device of the
container (``linux.devices`` plus the device-cgroup rule that lets it be used), any other
Source a bind mount; both only where the ExecEnv's policy lists the Source
(``allowed_devices``, ``allowed_host_paths``), otherwise the install is refused with 7225
naming every offending object. ``Options`` is a comma-separated list of ``ro``/``rw``:
bind mounts are read-only unless ``rw`` is given, devices read-write unless ``ro`` is.

Environment variables replace the bundle's variable of the same name, or are added.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from dsm_tr181.containerspec.policy import ConfinementPolicy
from dsm_tr181.errors import Fault, FaultCode

OPTIONS = frozenset({"ro", "rw"})


@dataclass(frozen=True)
class HostObject:
    source: str
    destination: str
    options: str = ""
    # (type "c"/"b", major, minor) of a device node Source, read on the host by the caller
    device: tuple[str, int, int] | None = None

    @property
    def writable(self) -> bool:
        flags = {flag.strip() for flag in self.options.split(",") if flag.strip()}
        return "rw" in flags if not self.is_device else "ro" not in flags

    @property
    def is_device(self) -> bool:
        return self.source.startswith("/dev/")


def check_syntax(objects: tuple[HostObject, ...]) -> None:
    """Fault 7004 for a malformed host object (the policy is checked by :func:`apply`)."""
    destinations = [item.destination for item in objects]
    if len(set(destinations)) != len(destinations):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "two HostObject inputs have the same Destination")
    for item in objects:
        for what, path in (("Source", item.source), ("Destination", item.destination)):
            if not posixpath.isabs(path) or posixpath.normpath(path) != path or path == "/":
                raise Fault(
                    FaultCode.INVALID_ARGUMENTS, f"HostObject {what} {path!r} is not a normalised absolute path"
                )
        unknown = {flag.strip() for flag in item.options.split(",") if flag.strip()} - OPTIONS
        if unknown:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"HostObject Options {sorted(unknown)} (known: ro, rw)")


def check_env(env: tuple[tuple[str, str], ...]) -> None:
    keys = [key for key, _ in env]
    if len(set(keys)) != len(keys):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "two EnvVariable inputs have the same Key")
    for key, value in env:
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"EnvVariable Key {key!r} is not a valid variable name")


def apply(
    spec: dict[str, Any], objects: tuple[HostObject, ...], policy: ConfinementPolicy | None, execenv: str
) -> None:
    """Add the host objects to ``spec``; ``policy`` None (a privileged EU): no policy check."""
    check_syntax(objects)
    refused = []
    linux = spec.setdefault("linux", {})
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    for item in objects:
        if item.is_device:
            if policy is not None and item.source not in policy.allowed_devices:
                refused.append(f"device {item.source}")
                continue
            if item.device is None:
                refused.append(f"device {item.source} (not a device node on this host)")
                continue
            kind, major, minor = item.device
            linux.setdefault("devices", []).append(
                {"path": item.destination, "type": kind, "major": major, "minor": minor, "fileMode": 0o660,
                 "uid": 0, "gid": 0}
            )  # fmt: skip
            access = "rw" if item.writable else "r"
            rules.append({"allow": True, "type": kind, "major": major, "minor": minor, "access": access})
        elif policy is not None and not policy.allows_host_path(item.source):
            refused.append(f"host path {item.source}")
        else:
            options = ["rbind", "rw" if item.writable else "ro", "nosuid", "nodev"]
            spec.setdefault("mounts", []).append(
                {"destination": item.destination, "type": "bind", "source": item.source, "options": options}
            )
    if refused:
        raise Fault(
            FaultCode.DU_EE_MISMATCH,
            f"execution environment {execenv!r} does not allow these host objects: {'; '.join(refused)}",
        )


def merge_env(bundle_env: Any, env: tuple[tuple[str, str], ...]) -> list[str]:
    """The bundle's ``process.env`` with the inputs replacing or adding variables."""
    check_env(env)
    given = dict(env)
    kept = (
        [str(entry) for entry in bundle_env if str(entry).partition("=")[0] not in given]
        if isinstance(bundle_env, list)
        else []
    )
    return kept + [f"{key}={value}" for key, value in env]
