"""Container ids as runc, crun and Dobby accept them."""

from __future__ import annotations

import re

from dsm_tr181.errors import Fault, FaultCode

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_LETTER = re.compile(r"[A-Za-z]")


def check_container_id(container_id: str) -> str:
    """Return ``container_id`` if it is 1-128 of [A-Za-z0-9._-] with a letter and no '..'."""
    if not (_ID.fullmatch(container_id) and _LETTER.search(container_id) and ".." not in container_id):
        raise Fault(
            FaultCode.INVALID_ARGUMENTS,
            f"invalid container id {container_id!r}: use 1-128 of [A-Za-z0-9._-], at least one letter, no '..'",
        )
    return container_id
