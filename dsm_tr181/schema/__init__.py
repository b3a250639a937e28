"""The supported data model: TR-106 types and the objects, parameters, commands and events.

``load_schema()`` parses the BBF XML of the datamodel directory (lxml, in
:mod:`.loader`); given a ``cache_dir`` it keeps the parsed result there and, as long as
the documents and the product version are unchanged, loads that instead — so the daemon
restarts without parsing XML or loading lxml.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dsm_tr181 import __version__
from dsm_tr181.schema.documents import SchemaError, default_datamodel_dir, documents_digest
from dsm_tr181.schema.model import Access, ArgumentObject, Command, Event, Object, Parameter, Schema, UniqueKey
from dsm_tr181.schema.types import BaseType, DataType, PathRef, RefType, Value

log = logging.getLogger(__name__)

# The BBF document datamodel/ restates (its spec attribute): TR-369 GetSupportedDM's
# data_model_inst_uri for the objects served (tests/conformance/test_wire_dbus.py checks it).
BBF_MODEL_URN = "urn:broadband-forum-org:tr-181-2-19-1-usp"

__all__ = [
    "BBF_MODEL_URN",
    "Access",
    "ArgumentObject",
    "BaseType",
    "Command",
    "DataType",
    "Event",
    "Object",
    "Parameter",
    "PathRef",
    "RefType",
    "Schema",
    "SchemaError",
    "UniqueKey",
    "Value",
    "load_schema",
]


def load_schema(
    directory: Path | None = None, cache_dir: Path | None = None, extensions: Sequence[Path] = ()
) -> Schema:
    """``extensions``: vendor-extension DM documents served in addition (whole)."""
    directory = directory or default_datamodel_dir()
    if cache_dir is None:
        return _parse(directory, extensions)
    key = f"{__version__}:{documents_digest(directory)}:" + ",".join(
        f"{path.name}={hashlib.sha256(path.read_bytes()).hexdigest()}" for path in extensions
    )
    cache = cache_dir / "schema.pickle"
    try:
        with cache.open("rb") as fh:
            cached_key, schema = pickle.load(fh)
        if cached_key == key:
            return schema
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        pass
    schema = _parse(directory, extensions)
    try:
        _write_atomically(cache, pickle.dumps((key, schema), protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as exc:
        log.warning("cannot cache the parsed data model in %s: %s", cache_dir, exc)
    return schema


def _parse(directory: Path, extensions: Sequence[Path]) -> Schema:
    from dsm_tr181.schema.loader import parse_directory

    return parse_directory(directory, extensions)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".schema-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
