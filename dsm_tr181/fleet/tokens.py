"""API tokens: random, shown once, stored as their sha256 (they carry 256 bits of entropy,
so a fast hash is enough: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "dsmf_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
