"""A dsm-tr181 bus front end in a distribution of its own: gets as text lines on a UNIX socket.

It uses only what dsm-tr181 publishes for adapters (dsm_tr181.adapters.AdapterContext,
dsm_tr181.sections, the DataModel's get) and is found through its ``dsm_tr181.buses`` entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsm_tr181.adapters import AdapterContext
from dsm_tr181.errors import Fault
from dsm_tr181.sections import build_section
from dsm_tr181.tree.datamodel import DataModel


@dataclass(frozen=True)
class LinesConfig:
    path: Path = Path("/run/dsm/lines.sock")


class LinesBus:
    name = "lines"

    def __init__(self, dm: DataModel, config: LinesConfig) -> None:
        self.dm = dm
        self.config = config
        self._server: asyncio.Server | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any], context: AdapterContext) -> LinesBus:
        config = build_section(LinesConfig, section, f"bus.{context.name}")
        dm, _loop = context.serving()
        return cls(dm, config)

    async def start(self) -> None:
        self.config.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self.config.path))

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
            self.config.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := (await reader.readline()).decode().strip():
                try:
                    values = self.dm.get_values([line])
                    answer = "".join(f"{path}={_text(value)}\n" for path, value in values.items())
                except Fault as fault:
                    answer = f"!{fault.code.usp} {fault.message}\n"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        writer.close()


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
