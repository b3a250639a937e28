"""Identifiers of DUs and EUs."""

from __future__ import annotations

import re
import uuid

_FQDN_SAFE = re.compile(r"[^0-9A-Za-z_-]")


def annex_c_uuid(name: str, vendor: str) -> str:
    """The DU UUID TR-181 Annex C prescribes: version 5 over the DNS namespace of
    ``<Name>.<Vendor>.``, other characters of Name percent-encoded ("sample.1" -> "sample%2e1")."""
    safe = _FQDN_SAFE.sub(lambda m: "".join(f"%{b:02x}" for b in m.group().encode()), name)
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{safe}.{vendor}."))


def euid(ee_name: str, instance: int) -> str:
    """Unique across ExecEnvs (TR-181: EE name + an EE-local value); doubles as container id."""
    return f"{ee_name}-{instance}"


def duid(ee_name: str, instance: int) -> str:
    return f"{ee_name}-du{instance}"
