"""An ExecEnv's confinement policy: what its execution units may have beyond the defaults."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from dsm_tr181.containerspec.defaults import ALL_CAPABILITIES
from dsm_tr181.sections import Invalid


@dataclass(frozen=True)
class ConfinementPolicy:
    """Read from the ExecEnv's configuration; everything off by default."""

    allow_privileged: bool = False  # Privileged=true EUs run as their bundle asks
    allowed_host_paths: tuple[str, ...] = ()  # host paths (and what is below them) that may be bind-mounted
    allowed_devices: tuple[str, ...] = ()  # device nodes (/dev/...) a bundle may ask for
    extra_capabilities: tuple[str, ...] = ()  # capabilities allowed beyond the default set
    allowed_rdk_plugins: tuple[str, ...] = ()  # Dobby rdkPlugins a bundle may ask for (e.g. "gpu")
    user_namespace: bool = False  # run each EU in a user namespace with its own UID/GID range
    allow_share_parent_network: bool = False  # EUs may ask for the host's network (ShareParentNetwork)

    def __post_init__(self) -> None:
        for key, paths in (("allowed_host_paths", self.allowed_host_paths), ("allowed_devices", self.allowed_devices)):
            for path in paths:
                if not posixpath.isabs(path) or posixpath.normpath(path) != path.rstrip("/") or path == "/":
                    raise Invalid(key, f"{path!r} must be a normalised absolute path other than /")
        for device in self.allowed_devices:
            if not device.startswith("/dev/"):
                raise Invalid("allowed_devices", f"{device!r} must be under /dev/")
        unknown = sorted(set(self.extra_capabilities) - ALL_CAPABILITIES)
        if unknown:
            raise Invalid("extra_capabilities", f"unknown capabilities {', '.join(unknown)}")

    def allows_host_path(self, source: str) -> bool:
        if not posixpath.isabs(source):
            return False
        path = posixpath.normpath(source)
        return any(path == allowed or path.startswith(allowed + "/") for allowed in self.allowed_host_paths)
