"""The contract every bus front end (rbus, D-Bus) implements.

A provider exposes one :class:`~dsm_tr181.tree.datamodel.DataModel` on its bus. It is
built by the daemon with ``ProviderClass.create(dm, section, loop)`` where ``section``
is the provider's own configuration section, and runs until ``close()``. Bus threads
never touch the tree: they hand each request to ``loop`` and wait for the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from dsm_tr181.tree.datamodel import DataModel


class BusProvider(Protocol):
    name: str

    @classmethod
    def create(cls, dm: DataModel, section: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> BusProvider:
        """Validate ``section`` (ValueError on unknown keys or wrong types) and build."""
        ...

    async def start(self) -> None:
        """Connect, register the whole served tree and start answering."""
        ...

    async def close(self) -> None:
        """Unregister, disconnect and release every bus resource (idempotent)."""
        ...
