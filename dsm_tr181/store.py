"""The LCM store on SQLite: records as JSON, instance counters, one WAL transaction per commit.

``synchronous=FULL`` makes every commit durable before the action it journals starts,
so a kill -9 (or a power cut) at any point leaves a journal recovery can trust.

A commit made with ``durable=False`` (an EU's RequestedState: the intent of a start or
stop, on the path to ``runc run``) is written to the WAL without waiting for the disk
(``synchronous=NORMAL``): atomic, and kept by a kill -9 of the daemon since the bytes are
in the kernel's hands. A thread of the store then flushes the WAL at once, while the
caller goes on; only a power cut in those few milliseconds can lose that commit, and the
database stays consistent either way (SQLite's WAL guarantee).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
from pathlib import Path

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.lcm.records import RECORD_TYPES, Record, Snapshot

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE record (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, key));
    CREATE TABLE counter (table_path TEXT PRIMARY KEY, next_instance INTEGER NOT NULL);
    """,
)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # create private before sqlite opens it
        os.close(fd)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA cache_size=-256")  # KiB: the store is read once at start
        self._migrate()
        self._flusher = _WalFlusher(Path(f"{path}-wal"))

    def _migrate(self) -> None:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
                self.db.execute("COMMIT")
            except sqlite3.Error:
                self.db.execute("ROLLBACK")
                raise

    def load(self) -> Snapshot:
        records: dict[str, dict[str, Record]] = {}
        for kind, key, data in self.db.execute("SELECT kind, key, data FROM record"):
            record_type = RECORD_TYPES.get(kind)
            if record_type is not None:
                records.setdefault(kind, {})[key] = record_type.from_json(json.loads(data))
        counters = dict(self.db.execute("SELECT table_path, next_instance FROM counter"))
        return Snapshot(records, counters)

    def commit(
        self,
        put: list[Record] | None = None,
        delete: list[Record] | None = None,
        counters: dict[str, int] | None = None,
        *,
        durable: bool = True,
    ) -> None:
        try:
            if durable:
                self._commit(put, delete, counters)
                return
            self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._commit(put, delete, counters)
            finally:
                self.db.execute("PRAGMA synchronous=FULL")
            self._flusher.request()
        except sqlite3.Error as exc:
            raise _store_fault(exc) from exc

    def _commit(self, put: list[Record] | None, delete: list[Record] | None, counters: dict[str, int] | None) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for record in delete or ():
                self.db.execute("DELETE FROM record WHERE kind = ? AND key = ?", (record.KIND, record.key()))
            self.db.executemany(
                "INSERT OR REPLACE INTO record (kind, key, data) VALUES (?, ?, ?)",
                [(r.KIND, r.key(), json.dumps(r.to_json(), sort_keys=True)) for r in put or ()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO counter (table_path, next_instance) VALUES (?, ?)",
                list((counters or {}).items()),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._flusher.stop()  # after the flushes still asked for
        self.db.close()  # the last connection checkpoints the WAL into the database file, synced


class _WalFlusher:
    """A thread that fsyncs the WAL file whenever asked: the second half of a ``durable=False``
    commit, off the committing thread. Requests made while it flushes are served by one more
    flush (each covers every frame written before it)."""

    def __init__(self, wal: Path) -> None:
        self._wal = wal
        self._changed = threading.Condition()
        self._asked = self._done = 0  # requests made / requests whose bytes are flushed
        self._stopping = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._changed:
            self._asked += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dsm-store-flush", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or self._done < self._asked)
                if self._done >= self._asked:  # stopping, and nothing left to flush
                    return
                target = self._asked
            self._flush()
            with self._changed:
                self._done = target

    def _flush(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # checkpointed and removed: its frames are in the synced database file
            return
        try:
            os.fsync(fd)
        except OSError:  # the disk failed: the next durable commit reports it
            pass
        finally:
            os.close(fd)


def _store_fault(exc: sqlite3.Error) -> Fault:
    """A failed write as the controller hears it: a full disk is the device's limit (7005), the rest ours."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC):
        return Fault(FaultCode.RESOURCES_EXCEEDED, "the store cannot be written: no space left on its file system")
    return Fault(FaultCode.INTERNAL_ERROR, f"the store cannot be written ({exc})")
