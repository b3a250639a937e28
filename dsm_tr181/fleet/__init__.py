"""Fleet targeting: a package and spec repository that decides by device labels
(``dsm-fleet serve``), and the device-side client that converges the daemon to it
through the TR-181 tree's own InstallDU()/Update()/Uninstall()/SetRequestedState().

``model`` and ``matching`` are pure (no I/O); ``repository`` is the storage port with
``sqlite_repo`` and ``postgres_repo`` behind it; ``server`` is the HTTP API; ``cli`` is
``dsm-fleet``; ``agent`` runs inside the daemon when ``[fleet] enable = true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsm_tr181.fleet.settings import FleetSettings
from dsm_tr181.sections import SectionError, build_section

if TYPE_CHECKING:
    from dsm_tr181.fleet.agent import FleetAgent
    from dsm_tr181.tree.datamodel import DataModel

EXTENSION = Path("vendor") / "dsm-rdk-fleet.xml"


def settings(section: Mapping[str, Any]) -> FleetSettings:
    """The daemon's ``[fleet]`` section, checked (ConfigError names the key)."""
    return build_section(FleetSettings, section, "fleet")


def extensions(datamodel_dir: Path | None) -> list[Path]:
    """The vendor-extension document the fleet client's parameters come from."""
    from dsm_tr181.schema.documents import default_datamodel_dir

    return [(datamodel_dir or default_datamodel_dir()) / EXTENSION]


def start(config: FleetSettings, dm: DataModel, state_dir: Path) -> FleetAgent | None:
    """The running fleet client, or None when it is off (the default)."""
    if not config.enable:
        return None
    from dsm_tr181.fleet.agent import FleetAgent

    try:
        agent = FleetAgent(config, dm, state_dir)
    except OSError as exc:
        raise SectionError("fleet", "token_file", str(exc)) from None
    agent.start()
    return agent
