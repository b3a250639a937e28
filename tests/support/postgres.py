"""A real PostgreSQL server for a test session, started from Debian's ``postgresql`` package.

``running_postgres()`` finds initdb/pg_ctl (PATH, else /usr/lib/postgresql/<version>/bin),
makes a cluster in a fresh temporary directory owned by an unprivileged user (PostgreSQL
refuses to run as root: the ``postgres`` user when there is one, else ``nobody``), starts it
on a free 127.0.0.1 port with trust authentication, and stops it and removes the directory
at the end. ``new_database()`` gives each test its own database. ``unavailable()`` says why
there can be no server (the tests skip with that reason).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from tests.support.httpserver import free_port

_databases = count(1)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


def _user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def unavailable() -> str:
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "PostgreSQL is not installed (Debian package postgresql): its tests are skipped"
    if os.geteuid() == 0 and _user() is None:
        return "no unprivileged user to run PostgreSQL as"
    return ""


@dataclass(frozen=True)
class Postgres:
    port: int

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=fleet dbname={database}"

    def new_database(self) -> str:
        import psycopg

        name = f"fleet_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    user = _user() if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="dsm-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if user is not None:
        for path in (base, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    as_user = ["runuser", "-u", user.pw_name, "--"] if user is not None else []
    port = free_port()
    initdb = [*as_user, str(_binary("initdb")), "-D", str(data), "-U", "fleet", "--auth=trust", "-E", "UTF8"]
    subprocess.run(initdb, check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(_binary("pg_ctl")), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60"]
    subprocess.run([*pg_ctl, "-o", options, "start"], check=True, capture_output=True, timeout=90)
    try:
        yield Postgres(port)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)
