"""Credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a device key file.

The key lives in its own 0600 file beside the store, so a copy of the database alone
does not reveal the Username/Password of InstallDU()/Update(). ``cryptography`` (about
8 MB of resident memory) is loaded only when a credential is first sealed or unsealed.
"""

from __future__ import annotations

import base64
import binascii
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class FernetSealer:
    def __init__(self, key_file: Path) -> None:
        self._key = self._load_or_create(key_file)

    @cached_property
    def _fernet(self) -> Fernet:
        from cryptography.fernet import Fernet

        return Fernet(self._key)

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        key = _read_key(path)
        if key is not None:
            return key
        # Written whole beside it, then linked into place: a crash never leaves a torn key
        # file, and a key another process created meanwhile is never replaced.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = base64.urlsafe_b64encode(os.urandom(32))  # a Fernet key
        temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            if path.exists():  # empty: its creation was cut short, nothing was sealed with it
                os.replace(temporary, path)
            else:
                os.link(temporary, path)
        except FileExistsError:  # another process created it first (whole, as here)
            existing = _read_key(path)
            if existing is None:
                raise ValueError(f"{path}: the device key could not be created") from None
            return existing
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(path.parent)
        return key

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def unseal(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError("stored credentials cannot be decrypted with this device key") from None


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``; None when there is none yet (no file, or an empty one)."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if not key:
        return None
    try:
        valid = len(base64.urlsafe_b64decode(key)) == 32
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{path} does not hold a device key (32 url-safe base64-encoded bytes)")
    return key


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
