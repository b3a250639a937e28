"""The repository in SQL common to SQLite and PostgreSQL; each adapter supplies its
connection, its placeholder and its binary column type."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dsm_tr181.fleet.model import Labels, Package, Spec, labels, spec_from_json, spec_json
from dsm_tr181.fleet.repository import DeviceRecord, Exists, Role, TokenRecord

_Rows = list[tuple[Any, ...]]
_Run = Callable[[str, Sequence[Any]], _Rows]  # one statement in the open transaction: its rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_packages (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, labels TEXT NOT NULL, version TEXT NOT NULL,
    sha256 TEXT NOT NULL, url TEXT NOT NULL, size BIGINT NOT NULL, UNIQUE (name, labels));
CREATE TABLE IF NOT EXISTS fleet_blobs (sha256 TEXT PRIMARY KEY, data {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_specs (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_tokens (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_devices (
    id TEXT PRIMARY KEY, labels TEXT NOT NULL, last_seen DOUBLE PRECISION NOT NULL, answer TEXT NOT NULL,
    state TEXT NOT NULL, last_report DOUBLE PRECISION NOT NULL);
INSERT INTO fleet_meta (key, value) VALUES ('revision', 0) ON CONFLICT (key) DO NOTHING;
"""
DEVICE_COLUMNS = "id, labels, last_seen, answer, state, last_report"


class SqlRepository:
    placeholder = "?"
    blob_type = "BLOB"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one connection, used by the server's worker threads in turn
        with self._transaction() as run:
            for statement in filter(str.strip, SCHEMA.format(blob=self.blob_type).split(";")):
                run(statement, ())

    # -- what an adapter provides ------------------------------------------------------------------

    @contextmanager
    def _connection_transaction(self) -> Iterator[Any]:
        """A cursor-like object with execute(sql, params) inside one transaction."""
        raise NotImplementedError
        yield

    def close(self) -> None:
        raise NotImplementedError

    # -- plumbing ------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[_Run]:
        with self._lock, self._connection_transaction() as cursor:

            def run(sql: str, params: Sequence[Any]) -> _Rows:
                cursor.execute(sql.replace("?", self.placeholder), tuple(params))
                return list(cursor.fetchall()) if cursor.description else []

            yield run

    def _query(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        with self._transaction() as run:
            return run(sql, params)

    @staticmethod
    def _bump(run: Any) -> None:
        run("UPDATE fleet_meta SET value = value + 1 WHERE key = 'revision'", ())

    # -- packages and blobs ----------------------------------------------------------------------------

    def revision(self) -> int:
        return int(self._query("SELECT value FROM fleet_meta WHERE key = 'revision'")[0][0])

    def add_package(self, package: Package, blob: bytes | None, replace: bool = False) -> None:
        row = (package.id, package.name, _labels_json(package.labels), package.version, package.sha256,
               package.url, package.size)  # fmt: skip
        with self._transaction() as run:
            old = run("SELECT sha256 FROM fleet_packages WHERE id = ?", (package.id,))
            if old and not replace:
                raise Exists(f"package {package.name} with labels {dict(package.labels)} exists ({package.id})")
            if blob is not None:
                run("INSERT INTO fleet_blobs (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
                    (package.sha256, blob))  # fmt: skip
            run("DELETE FROM fleet_packages WHERE id = ?", (package.id,))
            columns = "id, name, labels, version, sha256, url, size"
            run(f"INSERT INTO fleet_packages ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if old:
                self._drop_unused_blob(run, old[0][0])
            self._bump(run)

    @staticmethod
    def _drop_unused_blob(run: Any, sha256: str) -> None:
        if not run("SELECT 1 FROM fleet_packages WHERE sha256 = ?", (sha256,)):
            run("DELETE FROM fleet_blobs WHERE sha256 = ?", (sha256,))

    def packages(self) -> list[Package]:
        rows = self._query("SELECT name, labels, version, sha256, url, size FROM fleet_packages ORDER BY id")
        return [_package(row) for row in rows]

    def package(self, package_id: str) -> Package | None:
        sql = "SELECT name, labels, version, sha256, url, size FROM fleet_packages WHERE id = ?"
        rows = self._query(sql, (package_id,))
        return _package(rows[0]) if rows else None

    def delete_package(self, package_id: str) -> bool:
        with self._transaction() as run:
            old = run("SELECT sha256 FROM fleet_packages WHERE id = ?", (package_id,))
            if not old:
                return False
            run("DELETE FROM fleet_packages WHERE id = ?", (package_id,))
            self._drop_unused_blob(run, old[0][0])
            self._bump(run)
            return True

    def blob(self, sha256: str) -> bytes | None:
        rows = self._query("SELECT data FROM fleet_blobs WHERE sha256 = ?", (sha256,))
        return bytes(rows[0][0]) if rows else None

    # -- specs -------------------------------------------------------------------------------------------

    def put_spec(self, spec: Spec) -> bool:
        with self._transaction() as run:
            created = not run("SELECT 1 FROM fleet_specs WHERE id = ?", (spec.id,))
            run("INSERT INTO fleet_specs (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (spec.id, json.dumps(spec_json(spec), sort_keys=True)))  # fmt: skip
            self._bump(run)
            return created

    def specs(self) -> list[Spec]:
        return [spec_from_json(json.loads(body)) for (body,) in self._query("SELECT body FROM fleet_specs ORDER BY id")]

    def spec(self, spec_id: str) -> Spec | None:
        rows = self._query("SELECT body FROM fleet_specs WHERE id = ?", (spec_id,))
        return spec_from_json(json.loads(rows[0][0])) if rows else None

    def delete_spec(self, spec_id: str) -> bool:
        with self._transaction() as run:
            if not run("SELECT 1 FROM fleet_specs WHERE id = ?", (spec_id,)):
                return False
            run("DELETE FROM fleet_specs WHERE id = ?", (spec_id,))
            self._bump(run)
            return True

    # -- tokens ------------------------------------------------------------------------------------------

    def add_token(self, token_hash: str, record: TokenRecord) -> None:
        record.check()
        with self._transaction() as run:
            if run("SELECT 1 FROM fleet_tokens WHERE name = ?", (record.name,)):
                raise Exists(f"a token named {record.name} exists")
            run("INSERT INTO fleet_tokens (hash, name, role, labels) VALUES (?, ?, ?, ?)",
                (token_hash, record.name, record.role.value, _labels_json(record.labels)))  # fmt: skip

    def token(self, token_hash: str) -> TokenRecord | None:
        rows = self._query("SELECT name, role, labels FROM fleet_tokens WHERE hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRecord]:
        return [_token(row) for row in self._query("SELECT name, role, labels FROM fleet_tokens ORDER BY name")]

    def delete_token(self, name: str) -> bool:
        with self._transaction() as run:
            if not run("SELECT 1 FROM fleet_tokens WHERE name = ?", (name,)):
                return False
            run("DELETE FROM fleet_tokens WHERE name = ?", (name,))
            return True

    # -- devices -----------------------------------------------------------------------------------------

    def device_seen(self, device: str, device_labels: Labels, answer: dict[str, Any], when: float) -> None:
        self._query(
            f"INSERT INTO fleet_devices ({DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, '{{}}', 0) ON CONFLICT (id) DO UPDATE "
            "SET labels = excluded.labels, last_seen = excluded.last_seen, answer = excluded.answer",
            (device, _labels_json(device_labels), when, json.dumps(answer, sort_keys=True)),
        )

    def device_report(self, device: str, state: dict[str, Any], when: float) -> None:
        self._query(
            f"INSERT INTO fleet_devices ({DEVICE_COLUMNS}) VALUES (?, '{{}}', ?, '{{}}', ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET state = excluded.state, last_report = excluded.last_report, last_seen = excluded.last_seen",
            (device, when, json.dumps(state, sort_keys=True), when),
        )

    def devices(self) -> list[DeviceRecord]:
        return [_device(row) for row in self._query(f"SELECT {DEVICE_COLUMNS} FROM fleet_devices ORDER BY id")]

    def device(self, device: str) -> DeviceRecord | None:
        rows = self._query(f"SELECT {DEVICE_COLUMNS} FROM fleet_devices WHERE id = ?", (device,))
        return _device(rows[0]) if rows else None


def _labels_json(value: Labels) -> str:
    return json.dumps(dict(value), sort_keys=True)


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(row[0], Role(row[1]), labels(json.loads(row[2])))


def _package(row: Sequence[Any]) -> Package:
    name, label_text, version, sha256, url, size = row
    return Package(name, labels(json.loads(label_text)), version, sha256, url, int(size))


def _device(row: Sequence[Any]) -> DeviceRecord:
    device, label_text, last_seen, answer, state, last_report = row
    return DeviceRecord(device, labels(json.loads(label_text)), float(last_seen), json.loads(answer),
                        json.loads(state), float(last_report))  # fmt: skip
