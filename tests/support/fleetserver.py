"""A real ``dsm-fleet serve`` process in a test, and ``dsm-fleet`` CLI runs.

``FleetServer(work, tls)`` starts the server on an ephemeral port of 127.0.0.1 (the same
one again when restarted; HTTPS with the test CA's certificate when ``tls`` is given) over a
SQLite file in ``work`` (or the PostgreSQL DSN given), reads the URL it prints, and makes an
operator token.
``token(name, role)`` makes more; ``cli(*args)`` runs the CLI against it.
"""

from __future__ import annotations

import argparse
import os
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import yaml

from dsm_tr181.fleet.cli import open_repository
from dsm_tr181.fleet.client import FleetClient
from dsm_tr181.fleet.model import parse_labels
from dsm_tr181.fleet.repository import Role, TokenRecord
from dsm_tr181.fleet.tokens import new_token, token_hash
from tests.support.httpserver import TlsFiles
from tests.support.processes import stop_process

READY_TIMEOUT = 20.0


class FleetServer:
    def __init__(self, work: Path, tls: TlsFiles | None = None, postgres: str = "", extra: Sequence[str] = ()) -> None:
        self.work, self.tls, self.postgres, self.extra = work, tls, postgres, extra
        work.mkdir(parents=True, exist_ok=True)
        self.db = work / "fleet.db"
        self.log_path = work / "fleet.log"
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0  # 0 at first; a restart listens on the same port again
        self.operator = ""

    def store_args(self) -> list[str]:
        """The CLI options naming this server's store."""
        return self._store()

    def stored(self, sql: str) -> list[tuple]:
        """Rows of a query on the server's store, read directly (not through the API)."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self.postgres) as connection:
                return list(connection.execute(sql).fetchall())
        with sqlite3.connect(self.db) as connection:
            return list(connection.execute(sql).fetchall())

    def execute(self, sql: str, *params: str) -> None:
        """A write on the server's store (``?`` placeholders), bypassing the API and its checks."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self.postgres) as connection:
                connection.execute(sql.replace("?", "%s"), params)
            return
        with sqlite3.connect(self.db) as connection:
            connection.execute(sql, params)

    def _store(self) -> list[str]:
        return ["--postgres", self.postgres] if self.postgres else ["--db", str(self.db)]

    def start(self) -> FleetServer:
        command = [sys.executable, "-m", "dsm_tr181.fleet.cli", "serve", *self._store(),
                   "--listen", f"127.0.0.1:{self.port}", *self.extra]  # fmt: skip
        if self.tls:
            command += ["--cert", str(self.tls.server_cert), "--key", str(self.tls.server_key)]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("listening on "):
                    self.url = line.split()[-1]
                    self.port = int(self.url.rpartition(":")[2])
                    break
            if self.process.poll() is not None:
                raise RuntimeError(f"dsm-fleet serve exited with {self.process.returncode}: {self.log()}")
        else:
            raise RuntimeError(f"dsm-fleet serve did not start within {READY_TIMEOUT} s: {self.log()}")
        if not self.operator:
            self.operator = self.token("admin", "operator")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self, name: str, role: str, bound: str = "") -> str:
        """A new token, made on the server's database as ``dsm-fleet token add`` does; a device
        token must be bound to labels (``bound``, "fleet=eu")."""
        token = new_token()
        repo = open_repository(argparse.Namespace(postgres=self.postgres, db=str(self.db)))
        labels = parse_labels(bound)
        try:
            repo.add_token(token_hash(token), TokenRecord(name, Role(role), labels))
        finally:
            repo.close()
        return token

    @property
    def ca(self) -> str:
        return str(self.tls.ca_cert) if self.tls else ""

    def client(self, token: str = "") -> FleetClient:
        return FleetClient(self.url, token or self.operator, self.ca)

    def push(self, archive: Path, name: str, labels: str = "", version: str = "", replace: bool = False) -> dict:
        """What ``dsm-fleet package push`` does, without starting a process."""
        query = {"name": name, "labels": labels, "version": version, **({"replace": "true"} if replace else {})}
        return self.client().request("POST", "/v1/packages?" + urlencode(query), raw=archive.read_bytes()).json()

    def apply(self, text: str) -> None:
        """What ``dsm-fleet spec apply -f`` does with that YAML, without starting a process."""
        for spec in yaml.safe_load_all(text):
            self.client().request("PUT", f"/v1/specs/{spec['id']}", spec)

    def cli(self, *args: str, token: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DSM_FLEET_URL": self.url, "DSM_FLEET_TOKEN": token or self.operator,
               "DSM_FLEET_CA": self.ca}  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "dsm_tr181.fleet.cli", *args], capture_output=True,
                                text=True, env=env, timeout=30)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"dsm-fleet {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result
