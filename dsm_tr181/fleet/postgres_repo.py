"""The repository in PostgreSQL, for a server that outgrows one machine: several stateless
``dsm-fleet serve`` processes behind one database (each sees the others' changes through
``revision()``). psycopg 3, one connection per API process; each change is one transaction,
and the revision row it updates orders concurrent changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from dsm_tr181.fleet.sql_repo import SqlRepository


class PostgresRepository(SqlRepository):
    placeholder = "%s"
    blob_type = "BYTEA"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._db = psycopg.connect(dsn, autocommit=True)
        super().__init__()

    @contextmanager
    def _connection_transaction(self) -> Iterator[Any]:
        if self._db.closed or self._db.broken:
            self._db = psycopg.connect(self._dsn, autocommit=True)
        with self._db.transaction(), self._db.cursor() as cursor:
            yield cursor

    def close(self) -> None:
        self._db.close()
