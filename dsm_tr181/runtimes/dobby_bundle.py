"""What a bundle's config must carry for a real DobbyDaemon not to crash on it.

Found with DobbyDaemon built from rdkcentral/Dobby (release build, crun):

* ``StartFromBundle`` applies its default pids limit (on in RDK builds) by writing into
  ``linux.resources.pids`` without checking that ``linux.resources`` exists: a bundle
  without it kills the daemon (null dereference). An empty ``linux.resources`` is
  enough; a pids limit the bundle sets is left alone.
* ``GetInfo`` reads the container's RDK plugin manager, which exists only when the
  bundle has ``rdkPlugins``: without any it kills the daemon too. The adapter always adds
  the ``logging`` plugin, so every bundle it starts has one.
"""

from __future__ import annotations

from typing import Any

from dsm_tr181.errors import Fault, FaultCode

# Where crun sends the output of the OCI hooks (Dobby's plugin launcher).
HOOK_OUTPUT = {"run.oci.hooks.stdout": "/dev/null", "run.oci.hooks.stderr": "/dev/null"}


def make_safe_for_dobby(config: dict[str, Any]) -> None:
    """Add what Dobby dereferences unchecked (in place); Fault if the config cannot hold it."""
    linux = config.setdefault("linux", {})
    if not isinstance(linux, dict):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "config.json: 'linux' is not a JSON object")
    resources = linux.setdefault("resources", {})
    if not isinstance(resources, dict):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "config.json: 'linux.resources' is not a JSON object")
    annotations = config.setdefault("annotations", {})
    if not isinstance(annotations, dict):
        raise Fault(FaultCode.INVALID_ARGUMENTS, "config.json: 'annotations' is not a JSON object")
    annotations.update(HOOK_OUTPUT)
    if not config.get("rdkPlugins"):
        raise Fault(FaultCode.INTERNAL_ERROR, "a bundle for Dobby needs at least one RDK plugin (GetInfo needs one)")
