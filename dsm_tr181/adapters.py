"""The one way adapters are found and built: entry points, loaded lazily.

Runtimes, packagers and buses are registered as entry points of the groups
``dsm_tr181.runtimes``, ``dsm_tr181.packagers`` and ``dsm_tr181.buses`` (this package's own
in setup.cfg; any installed distribution may add more). Each names a class with one factory,
``from_section(section, context)``: its configuration section (checked with
:func:`dsm_tr181.sections.build_section`) and an :class:`AdapterContext`.

A heavy or optional dependency (cffi + librbus, PyGObject + pydbus) is imported only when
its adapter is selected; any failure becomes one :class:`AdapterUnavailable` naming what is
missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsm_tr181.errors import AdapterUnavailable

if TYPE_CHECKING:
    from dsm_tr181.tree.datamodel import DataModel

GROUPS: dict[str, str] = {
    "runtime": "dsm_tr181.runtimes",
    "packager": "dsm_tr181.packagers",
    "bus": "dsm_tr181.buses",
}


@dataclass(frozen=True)
class AdapterContext:
    """What the daemon gives every adapter factory besides its configuration section."""

    name: str  # the name it was chosen by ("runc", "dobby", "tar", "rbus", a plug-in's own)
    state_dir: Path  # a directory of its own for state that must survive a restart
    datamodel: DataModel | None = None  # buses: the tree they serve
    loop: asyncio.AbstractEventLoop | None = None  # buses: the daemon's loop

    def serving(self) -> tuple[DataModel, asyncio.AbstractEventLoop]:
        """The tree and the loop a bus needs (AdapterUnavailable if the daemon gave none)."""
        if self.datamodel is None or self.loop is None:
            raise AdapterUnavailable(f"bus {self.name!r} needs a data model and a loop to serve")
        return self.datamodel, self.loop


def _registered(kind: str) -> dict[str, list[EntryPoint]]:
    try:
        group = GROUPS[kind]
    except KeyError:
        raise AdapterUnavailable(f"no adapter kind {kind!r} (known: {', '.join(GROUPS)})") from None
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=group):
        found.setdefault(entry.name, []).append(entry)
    return found


def names(kind: str) -> list[str]:
    """Every adapter name registered for ``kind``."""
    return sorted(_registered(kind))


def load(kind: str, name: str) -> Any:
    """The class registered as ``name`` for adapter ``kind`` (imported now)."""
    registered = _registered(kind)
    entries = registered.get(name, [])
    if not entries:
        known = ", ".join(sorted(registered)) or "none"
        raise AdapterUnavailable(f"no {kind} adapter named {name!r} (known: {known})")
    targets = sorted({entry.value for entry in entries})
    if len(targets) > 1:
        raise AdapterUnavailable(f"{kind} adapter {name!r} is registered more than once: {', '.join(targets)}")
    try:
        return entries[0].load()
    except (ImportError, AttributeError) as exc:
        raise AdapterUnavailable(f"{kind} adapter {name!r} ({targets[0]}) is unavailable: {exc}") from exc


def create(kind: str, name: str, section: Mapping[str, Any], context: AdapterContext) -> Any:
    """Build the adapter ``name`` of ``kind``: ``from_section(section, context)`` of its class.

    ValueError (``section.key: reason``) for a bad section, AdapterUnavailable when it
    cannot be had.
    """
    cls = load(kind, name)
    factory = getattr(cls, "from_section", None)
    if factory is None:
        raise AdapterUnavailable(f"{kind} adapter {name!r} ({cls.__module__}.{cls.__qualname__}) has no from_section()")
    return factory(section, context)
