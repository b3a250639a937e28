"""The container-spec layer: what an execution unit really runs with.

One pure function (:func:`~.derive.effective_spec`) turns a bundle's ``config.json``, the
InstallDU()/Update() inputs, the ExecEnv's confinement policy and the daemon's settings
into the OCI runtime spec every runtime receives — never the bundle's own file. Here
confinement is decided (:mod:`.review` refuses what a bundle may not have, :mod:`.defaults`
and :mod:`.seccomp` say what an unprivileged EU gets), and here resource limits,
networking, storage, environment and host objects hang their changes.

Core code: imports only :mod:`dsm_tr181.errors` and the standard library.
"""

from dsm_tr181.containerspec.derive import EuInputs, SpecContext, effective_spec
from dsm_tr181.containerspec.policy import ConfinementPolicy
from dsm_tr181.containerspec.summary import summarize

__all__ = ["ConfinementPolicy", "EuInputs", "SpecContext", "effective_spec", "summarize"]
