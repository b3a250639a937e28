"""Lazy registry of adapters: configuration names to ``module:Class``.

A heavy or optional dependency (cffi + librbus, PyGObject + pydbus) is imported only
when its adapter is selected; a failure becomes one :class:`AdapterUnavailable`
naming what is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from dsm_tr181.errors import AdapterUnavailable

REGISTRY: dict[str, dict[str, str]] = {
    "packager": {
        "tar": "dsm_tr181.packagers.tar:TarPackager",
        "image": "dsm_tr181.packagers.image:ImagePackager",
        "auto": "dsm_tr181.packagers.dispatch:AutoPackager",
    },
    "runtime": {
        "runc": "dsm_tr181.runtimes.oci:OciRuntime",
        "crun": "dsm_tr181.runtimes.oci:OciRuntime",
        "oci": "dsm_tr181.runtimes.oci:OciRuntime",
        "dobby": "dsm_tr181.runtimes.dobby:DobbyRuntime",
    },
    "bus": {
        "rbus": "dsm_tr181.buses.rbus:RbusProvider",
        "dbus": "dsm_tr181.buses.dbus:DbusProvider",
    },
}


def load(kind: str, name: str) -> Any:
    """The class registered as ``name`` for adapter ``kind`` (imported now)."""
    try:
        target = REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(kind, {}))) or "none"
        raise AdapterUnavailable(f"no {kind} adapter named {name!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterUnavailable(f"{kind} adapter {name!r} is unavailable: {exc}") from exc
    return getattr(module, attr)
