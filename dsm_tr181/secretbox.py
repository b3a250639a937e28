"""Credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a device key file.

The key lives in its own 0600 file beside the store, so a copy of the database alone
does not reveal the Username/Password of InstallDU()/Update(). ``cryptography`` (about
8 MB of resident memory) is loaded only when a credential is first sealed or unsealed.
"""

from __future__ import annotations

import base64
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
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = base64.urlsafe_b64encode(os.urandom(32))  # a Fernet key
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        return key

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def unseal(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError("stored credentials cannot be decrypted with this device key") from None
