"""GetBulk's answer: a Get's values as one JSON document (see :mod:`~dsm_tr181.buses.bulk_json`)."""

from __future__ import annotations

from dsm_tr181.buses import bulk_json
from dsm_tr181.buses.bulk_json import Snapshot, snapshot
from dsm_tr181.buses.dbus_variants import string_reply
from dsm_tr181.gi_repository import GLib

__all__ = ["BulkEncoder", "Snapshot", "snapshot"]


class BulkEncoder(bulk_json.BulkEncoder):
    def reply(self, objects: Snapshot) -> GLib.Variant:
        """The method reply ``(s)``."""
        return string_reply(self.encode(objects))
