"""Which DUs the fleet client installed, and its settings as set in the tree: its durable
journal (``<state_dir>/fleet.json``).

An entry is written *before* the InstallDU()/Update()/Uninstall() it announces, with the
phase under way, and rewritten when the step is over; the file is replaced atomically and
fsynced. After a kill -9 the client looks at the tree (which the LCM has recovered) for the
DU of each pending entry, so it neither loses a DU nor installs one twice. DUs not in this
journal are a controller's and are never touched.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

# DU UUIDs of fleet apps: RFC 4122 version 5 in a namespace of our own (TR-181 DU.UUID).
NAMESPACE = uuid.UUID("5c0a6f3e-8a53-4d8c-9a55-64736d666c74")


def du_uuid(app: str) -> str:
    return str(uuid.uuid5(NAMESPACE, app))


@dataclass
class Owned:
    app: str
    uuid: str
    package: str = ""
    sha256: str = ""
    url: str = ""
    phase: str = "installed"  # installing | updating | uninstalling | installed


class Ownership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Owned] = {}
        self.overrides: dict[str, object] = {}  # Enable/URL/Labels as set through the tree
        if path.exists():
            data = json.loads(path.read_text())
            self.entries = {app: Owned(**entry) for app, entry in data.get("owned", {}).items()}
            self.overrides = dict(data.get("overrides", {}))

    def put(self, entry: Owned) -> None:
        self.entries[entry.app] = entry
        self._save()

    def drop(self, app: str) -> None:
        if self.entries.pop(app, None) is not None:
            self._save()

    def set_overrides(self, values: dict[str, object]) -> None:
        self.overrides = dict(values)
        self._save()

    def _save(self) -> None:
        owned = {app: asdict(e) for app, e in sorted(self.entries.items())}
        text = json.dumps({"owned": owned, "overrides": self.overrides}, indent=1)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".fleet-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
        except BaseException:
            os.unlink(temp)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
