"""``dsm-fleet``: run the repository server, manage its tokens, packages and specs, watch devices.

Server side (on the repository's own database)::

    dsm-fleet serve --db fleet.db --listen 0.0.0.0:8443 --cert server.pem --key server.key
    dsm-fleet token add NAME [--role device] --labels k=v,.. --db fleet.db   (prints it once)
    dsm-fleet token add NAME --role operator --db fleet.db
    dsm-fleet token list|rm NAME --db fleet.db

Operator commands (``--url``/$DSM_FLEET_URL, ``--token``/$DSM_FLEET_TOKEN, ``--ca``/$DSM_FLEET_CA)::

    dsm-fleet package push FILE --name NAME [--labels k=v,..] [--version V] [--replace]
    dsm-fleet package push --source-url URL --sha256 HEX --name NAME ...
    dsm-fleet package list | package rm ID
    dsm-fleet spec apply -f spec.yaml | spec list | spec rm ID
    dsm-fleet resolve --labels k=v,...          (a dry run)
    dsm-fleet devices

``--postgres DSN`` instead of ``--db`` puts the repository in PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dsm_tr181.fleet.client import FleetApiError, FleetClient
from dsm_tr181.fleet.model import FleetError, labels_text, parse_labels
from dsm_tr181.fleet.repository import Exists, Repository, Role, TokenRecord
from dsm_tr181.fleet.tokens import new_token, token_hash


def open_repository(args: argparse.Namespace) -> Repository:
    if args.postgres:
        from dsm_tr181.fleet.postgres_repo import PostgresRepository

        return PostgresRepository(args.postgres)
    from dsm_tr181.fleet.sqlite_repo import SqliteRepository

    return SqliteRepository(Path(args.db))


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from dsm_tr181.fleet.server import FleetServer, ServerOptions, tls_context

    repo = open_repository(args)
    options = ServerOptions(public_url=args.public_url, resolve_rate=args.resolve_rate,
                            resolve_burst=args.resolve_burst)  # fmt: skip
    host, _, port = args.listen.rpartition(":")
    context = tls_context(args.cert, args.key) if args.cert else None
    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    if access_log is not None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    runner = web.AppRunner(FleetServer(repo, options).app(), access_log=access_log)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=context)
    await site.start()
    bound = runner.addresses[0]
    print(f"listening on {'https' if context else 'http'}://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    repo.close()


def _client(args: argparse.Namespace) -> FleetClient:
    if not args.url or not args.token:
        raise FleetError("give --url and --token (or DSM_FLEET_URL and DSM_FLEET_TOKEN)")
    return FleetClient(args.url, args.token, args.ca)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _list_or_rm(client: FleetClient, args: argparse.Namespace, collection: str) -> bool:
    """``list`` and ``rm ID`` of packages and specs; False for the other actions."""
    if args.action == "list":
        _print(client.request("GET", collection).json())
    elif args.action == "rm":
        client.request("DELETE", f"{collection}/{args.target}")
    else:
        return False
    return True


def _package(args: argparse.Namespace) -> None:
    client = _client(args)
    if _list_or_rm(client, args, "/v1/packages"):
        return
    if args.url_ref:
        body = {"name": args.name, "labels": dict(parse_labels(args.labels)), "version": args.version,
                "url": args.url_ref, "sha256": args.sha256}  # fmt: skip
        _print(client.request("POST", "/v1/packages" + ("?replace=true" if args.replace else ""), body).json())
    else:
        if not args.target:
            raise FleetError("package push needs a FILE (or --source-url and --sha256)")
        query = {"name": args.name, "labels": labels_text(parse_labels(args.labels)), "version": args.version}
        if args.replace:
            query["replace"] = "true"
        data = Path(args.target).read_bytes()
        _print(client.request("POST", "/v1/packages?" + urlencode(query), raw=data).json())


def _spec(args: argparse.Namespace) -> None:
    client = _client(args)
    if _list_or_rm(client, args, "/v1/specs"):
        return
    import yaml

    if not args.file:
        raise FleetError("spec apply needs -f spec.yaml")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    for document in yaml.safe_load_all(text):
        if not isinstance(document, dict) or "id" not in document:
            raise FleetError("each YAML document is a spec with an id")
        _print(client.request("PUT", f"/v1/specs/{document['id']}", document).json())


def _resolve(args: argparse.Namespace) -> None:
    _print(_client(args).request("POST", "/v1/resolve", {"labels": dict(parse_labels(args.labels))}).json())


def _devices(args: argparse.Namespace) -> None:
    devices = _client(args).request("GET", "/v1/devices").json()
    if args.json:
        _print(devices)
        return
    print(f"{'DEVICE':<20} {'LAST SEEN':<20} {'CONVERGED':<9}  LABELS / LAST ERROR")
    for d in devices:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["last_seen"])) if d["last_seen"] else "never"
        labels = ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
        print(f"{d['id']:<20} {seen:<20} {'yes' if d['converged'] else 'no':<9}  {labels}")
        if d["last_error"]:
            print(f"{'':<52}error: {d['last_error']}")


def _token(args: argparse.Namespace) -> None:
    repo = open_repository(args)
    try:
        if args.action == "add":
            token = new_token()
            repo.add_token(token_hash(token), TokenRecord(args.name, Role(args.role), parse_labels(args.labels)))
            print(token)
        elif args.action == "rm":
            if not repo.delete_token(args.name):
                raise FleetError(f"no token named {args.name}")
        else:
            for record in repo.tokens():
                print(f"{record.name}\t{record.role.value}\t{labels_text(record.labels)}")
    finally:
        repo.close()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dsm-fleet", description="dsm-tr181 fleet repository")
    sub = top.add_subparsers(dest="command", required=True)

    def store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=os.environ.get("DSM_FLEET_DB", "fleet.db"), help="SQLite file")
        p.add_argument("--postgres", default=os.environ.get("DSM_FLEET_POSTGRES", ""), help="PostgreSQL DSN")

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("DSM_FLEET_URL", ""))
        p.add_argument("--token", default=os.environ.get("DSM_FLEET_TOKEN", ""))
        p.add_argument(
            "--ca", default=os.environ.get("DSM_FLEET_CA", ""), help="CA file the server's certificate chains to"
        )

    serve = sub.add_parser("serve", help="run the API server")
    store(serve)
    serve.add_argument("--listen", default="127.0.0.1:8443", help="host:port (port 0: any free port)")
    serve.add_argument("--cert", default="", help="server certificate (PEM); without it: plain HTTP")
    serve.add_argument("--key", default="")
    serve.add_argument("--public-url", default="", help="base URL devices download blobs from")
    serve.add_argument("--resolve-rate", type=float, default=2.0, help="resolves per second per token")
    serve.add_argument("--resolve-burst", type=int, default=10)
    serve.add_argument("--access-log", action="store_true", help="log each request on stderr")
    token = sub.add_parser("token", help="manage API tokens (on the database)")
    store(token)
    token.add_argument("action", choices=("add", "list", "rm"))
    token.add_argument("name", nargs="?", default="")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.DEVICE.value)
    token.add_argument("--labels", default="", help="device token (required): labels bound to it, not claimable")
    package = sub.add_parser("package", help="push, list, remove packages")
    remote(package)
    package.add_argument("action", choices=("push", "list", "rm"))
    package.add_argument("target", nargs="?", default="", help="push: the DU archive; rm: the package id")
    package.add_argument("--name", default="")
    package.add_argument("--labels", default="")
    package.add_argument("--version", default="")
    package.add_argument("--source-url", dest="url_ref", default="", help="push: the archive lives at this URL")
    package.add_argument("--sha256", default="")
    package.add_argument("--replace", action="store_true", help="replace the package of that name and labels")
    spec = sub.add_parser("spec", help="apply, list, remove specs")
    remote(spec)
    spec.add_argument("action", choices=("apply", "list", "rm"))
    spec.add_argument("target", nargs="?", default="")
    spec.add_argument("-f", "--file", default="")
    resolve = sub.add_parser("resolve", help="what a device with these labels would run (dry run)")
    remote(resolve)
    resolve.add_argument("--labels", default="")
    devices = sub.add_parser("devices", help="devices: last seen, labels, converged, last error")
    remote(devices)
    devices.add_argument("--json", action="store_true")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("token",) and args.action in ("add", "rm") and not args.name:
        print("dsm-fleet: token add/rm needs a NAME", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            asyncio.run(_serve(args))
        else:
            {"token": _token, "package": _package, "spec": _spec, "resolve": _resolve, "devices": _devices}[
                args.command
            ](args)
    except (FleetError, Exists, FleetApiError, OSError) as exc:
        print(f"dsm-fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
