"""``dsm-fleet serve``: the repository's HTTP API, JSON under ``/v1``.

Framework: aiohttp. The standard library has no HTTP server fit for this (``http.server``
says of itself that it is not for production: no keep-alive tuning, no request size limits,
one thread per connection), and asyncio has only streams. aiohttp is a maintained asyncio
server with a strict HTTP/1.1 parser, TLS from an ``ssl.SSLContext``, request size limits and
streamed responses, and nothing else to install (no ASGI server, no C build on Debian 12).

Routes (``operator`` / ``device``: the token role allowed)::

    POST   /v1/packages?name=&version=&labels=k=v,..[&replace=true]   operator  body: the DU archive
    POST   /v1/packages                      operator  JSON {name, labels, version, url, sha256}
    GET    /v1/packages, /v1/packages/{id}   operator
    DELETE /v1/packages/{id}                 operator
    GET    /v1/blobs/{sha256}[.sha256]       operator; device: only what its last answer names
    PUT    /v1/specs/{id}  GET /v1/specs[/{id}]  DELETE /v1/specs/{id}   operator
    POST   /v1/resolve  {labels}             device: its own answer (If-None-Match: 304);
                                             operator: a dry run for any labelset
    POST   /v1/devices/self/state            device: what it installed and what failed
    GET    /v1/devices                       operator

A device token is bound to labels (``token add --labels fleet=eu``; an unbound one is refused):
the device is refused any other value for them and always resolved with them, so it cannot
read the answer meant for another fleet. Tokens come as ``Authorization: Bearer <token>`` (or
Basic with the token as password, which is what the daemon's packager sends when downloading
a blob). Resolve is rate-limited per token (429 with Retry-After). Answers are cached by
catalog revision and labelset, so an unchanged poll costs a dictionary lookup and a 304.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from dsm_tr181.fleet.matching import Catalog
from dsm_tr181.fleet.model import (
    FleetError,
    Labels,
    Package,
    Resolution,
    check_name,
    labels,
    package_json,
    parse_labels,
    spec_from_json,
    spec_json,
)
from dsm_tr181.fleet.ratelimit import RateLimiter
from dsm_tr181.fleet.repository import Exists, Repository, Role, TokenRecord
from dsm_tr181.fleet.tokens import token_hash

log = logging.getLogger("dsm.fleet.server")
HEX64 = frozenset("0123456789abcdef")
TOKEN = web.RequestKey("token", TokenRecord)


@dataclass(frozen=True)
class ServerOptions:
    public_url: str = ""  # base of the blob URLs given to devices; "" = the request's own origin
    resolve_rate: float = 2.0  # resolves per second per token (0 = unlimited)
    resolve_burst: int = 10
    max_upload_bytes: int = 512 * 1024 * 1024
    catalog_check_interval: float = 1.0  # how stale another API process's change may be seen
    seen_interval: float = 30.0  # rewrite a device's last-seen time at most this often when nothing changed
    answer_cache_size: int = 4096


class FleetServer:
    def __init__(self, repo: Repository, options: ServerOptions) -> None:
        self.repo, self.options = repo, options
        self.limiter = RateLimiter(options.resolve_rate, options.resolve_burst)
        self._catalog: tuple[int, Catalog] | None = None
        self._checked = 0.0
        self._answers: OrderedDict[tuple[int, Labels], tuple[dict[str, Any], str]] = OrderedDict()
        self._seen: dict[str, tuple[str, Labels, float]] = {}  # device -> (etag, labels, written at)
        self._tokens: dict[str, tuple[TokenRecord | None, float]] = {}

    # -- the application ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_upload_bytes, middlewares=[self._errors, self._auth])
        app.router.add_post("/v1/packages", self.push_package)
        app.router.add_get("/v1/packages", self.list_packages)
        app.router.add_get("/v1/packages/{id}", self.get_package)
        app.router.add_delete("/v1/packages/{id}", self.delete_package)
        app.router.add_get("/v1/blobs/{name}", self.get_blob)
        app.router.add_put("/v1/specs/{id}", self.put_spec)
        app.router.add_get("/v1/specs", self.list_specs)
        app.router.add_get("/v1/specs/{id}", self.get_spec)
        app.router.add_delete("/v1/specs/{id}", self.delete_spec)
        app.router.add_post("/v1/resolve", self.resolve)
        app.router.add_post("/v1/devices/self/state", self.report)
        app.router.add_get("/v1/devices", self.list_devices)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except FleetError as exc:
            return _error(400, str(exc))
        except Exists as exc:
            return _error(409, str(exc))

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        record = await self._token(request.headers.get("Authorization", ""))
        if record is None:
            return _error(401, "a valid API token is needed", {"WWW-Authenticate": 'Bearer realm="dsm-fleet"'})
        request[TOKEN] = record
        return await handler(request)

    async def _token(self, header: str) -> TokenRecord | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except ValueError:
                return None
        elif scheme.lower() != "bearer":
            return None
        digest = token_hash(value.strip())
        cached = self._tokens.get(digest)
        if cached and time.monotonic() - cached[1] < 5.0:  # a revoked token stops working within 5 s
            return cached[0]
        record = await asyncio.to_thread(self.repo.token, digest)
        self._tokens[digest] = (record, time.monotonic())
        return record

    # -- packages ----------------------------------------------------------------------------------------

    async def push_package(self, request: web.Request) -> web.Response:
        _need(request, Role.OPERATOR)
        replace = request.query.get("replace", "") in ("1", "true")
        if request.content_type == "application/json":
            body = await _json(request)
            if not isinstance(body, dict):
                raise FleetError("a package is a JSON object")
            sha256 = str(body.get("sha256", "")).lower()
            url = str(body.get("url", ""))
            if not url.startswith(("http://", "https://", "file://")):
                raise FleetError("a package given by reference needs an http(s):// or file:// url")
            package = _new_package(body.get("name"), body.get("labels") or {}, body.get("version", ""), sha256, url, 0)
            blob = None
        else:
            blob = await request.read()
            if not blob:
                raise FleetError("the request body (the DU archive) is empty")
            sha256 = hashlib.sha256(blob).hexdigest()
            query = request.query
            package = _new_package(query.get("name"), parse_labels(query.get("labels", "")), query.get("version", ""),
                                   sha256, "", len(blob))  # fmt: skip
        await asyncio.to_thread(self.repo.add_package, package, blob, replace)
        self._checked = 0.0
        log.info("package %s pushed (%s)", package.id, package.sha256)
        return web.json_response(package_json(package), status=201)

    async def list_packages(self, request: web.Request) -> web.Response:
        return await self._list(request, self.repo.packages, package_json)

    async def get_package(self, request: web.Request) -> web.Response:
        return await self._get(request, self.repo.package, package_json, "package")

    async def delete_package(self, request: web.Request) -> web.Response:
        return await self._delete(request, self.repo.delete_package, "package")

    async def get_blob(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        sha256, checksum = (name[:-7], True) if name.endswith(".sha256") else (name, False)
        if len(sha256) != 64 or not set(sha256) <= HEX64:
            return _error(404, "no such blob")
        token = request[TOKEN]
        if token.role is Role.DEVICE:
            device = await asyncio.to_thread(self.repo.device, token.name)
            allowed = {app["sha256"] for app in (device.answer.get("apps", []) if device else [])}
            if sha256 not in allowed:
                return _error(403, "this device was not told to run that package")
        if checksum:
            return web.Response(text=f"{sha256}  {sha256}\n")
        blob = await asyncio.to_thread(self.repo.blob, sha256)
        if blob is None:
            return _error(404, "no such blob")
        return web.Response(body=blob, content_type="application/octet-stream")

    # -- specs ---------------------------------------------------------------------------------------------

    async def put_spec(self, request: web.Request) -> web.Response:
        _need(request, Role.OPERATOR)
        body = await _json(request)
        if isinstance(body, dict):
            body.setdefault("id", request.match_info["id"])
        spec = spec_from_json(body)
        if spec.id != request.match_info["id"]:
            raise FleetError(f"the spec's id {spec.id} is not the one in the path")
        created = await asyncio.to_thread(self.repo.put_spec, spec)
        self._checked = 0.0
        return web.json_response(spec_json(spec), status=201 if created else 200)

    async def list_specs(self, request: web.Request) -> web.Response:
        return await self._list(request, self.repo.specs, spec_json)

    async def get_spec(self, request: web.Request) -> web.Response:
        return await self._get(request, self.repo.spec, spec_json, "spec")

    async def delete_spec(self, request: web.Request) -> web.Response:
        return await self._delete(request, self.repo.delete_spec, "spec")

    # -- the shape of list/get/delete of packages and specs (operator only) ---------------------------------

    async def _list(
        self, request: web.Request, fetch: Callable[[], list[Any]], to_json: Callable[[Any], Any]
    ) -> web.Response:
        _need(request, Role.OPERATOR)
        return web.json_response([to_json(item) for item in await asyncio.to_thread(fetch)])

    async def _get(
        self, request: web.Request, fetch: Callable[[str], Any], to_json: Callable[[Any], Any], what: str
    ) -> web.Response:
        _need(request, Role.OPERATOR)
        item = await asyncio.to_thread(fetch, request.match_info["id"])
        if item is None:
            return _error(404, f"no {what} {request.match_info['id']}")
        return web.json_response(to_json(item))

    async def _delete(self, request: web.Request, delete: Callable[[str], bool], what: str) -> web.Response:
        _need(request, Role.OPERATOR)
        if not await asyncio.to_thread(delete, request.match_info["id"]):
            return _error(404, f"no {what} {request.match_info['id']}")
        self._checked = 0.0  # the next resolve looks at the revision at once
        return web.Response(status=204)

    # -- resolve and devices --------------------------------------------------------------------------------

    async def resolve(self, request: web.Request) -> web.Response:
        token = request[TOKEN]
        wait = self.limiter.take(token.name)
        if wait:
            return _error(429, "too many resolves; slow down", {"Retry-After": str(max(1, round(wait + 0.5)))})
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("labels", {}), dict):
            raise FleetError('resolve takes {"labels": {name: value}}')
        device_labels = labels(body.get("labels", {}))
        if token.role is Role.DEVICE:
            if not token.labels:  # made before binding was required (TokenRecord.check)
                return _error(403, "this device token is bound to no labels: re-issue it with --labels")
            claimed = dict(device_labels)
            if any(claimed.get(name, value) != value for name, value in token.labels):
                return _error(403, f"this device's token is bound to {dict(token.labels)}")
            device_labels = labels(claimed | dict(token.labels))
        answer, etag = await self._answer(device_labels, _origin(request, self.options.public_url))
        if token.role is Role.DEVICE:
            await self._record_seen(token.name, device_labels, answer, etag)
        if etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response(answer, headers={"ETag": etag})

    async def _answer(self, device_labels: Labels, origin: str) -> tuple[dict[str, Any], str]:
        revision, catalog = await self._current_catalog()
        key = (revision, (*device_labels, ("", origin)))
        cached = self._answers.get(key)
        if cached is None:
            answer = _answer_json(catalog.resolve(dict(device_labels)), origin)
            text = json.dumps(answer, sort_keys=True, separators=(",", ":")).encode()
            cached = (answer, '"' + hashlib.sha256(text).hexdigest()[:32] + '"')
            self._answers[key] = cached
            if len(self._answers) > self.options.answer_cache_size:
                self._answers.popitem(last=False)
        return cached

    async def _current_catalog(self) -> tuple[int, Catalog]:
        now = time.monotonic()
        if self._catalog is not None and now - self._checked < self.options.catalog_check_interval:
            return self._catalog
        revision = await asyncio.to_thread(self.repo.revision)
        if self._catalog is None or self._catalog[0] != revision:
            packages, specs = await asyncio.to_thread(lambda: (self.repo.packages(), self.repo.specs()))
            self._catalog = (revision, Catalog(packages, specs))
            self._answers.clear()
        self._checked = now
        return self._catalog

    async def _record_seen(self, device: str, device_labels: Labels, answer: dict[str, Any], etag: str) -> None:
        now = time.time()
        last = self._seen.get(device)
        if last and last[0] == etag and last[1] == device_labels and now - last[2] < self.options.seen_interval:
            return
        await asyncio.to_thread(self.repo.device_seen, device, device_labels, answer, now)
        self._seen[device] = (etag, device_labels, now)

    async def report(self, request: web.Request) -> web.Response:
        token = _need(request, Role.DEVICE)
        state = await _json(request)
        if not isinstance(state, dict) or set(state) - {"installed", "failures"}:
            raise FleetError("a report is {installed: [...], failures: [...]}")
        for key in ("installed", "failures"):
            if not isinstance(state.get(key, []), list) or not all(isinstance(i, dict) for i in state.get(key, [])):
                raise FleetError(f"{key} must be a list of objects")
        await asyncio.to_thread(self.repo.device_report, token.name, state, time.time())
        return web.Response(status=204)

    async def list_devices(self, request: web.Request) -> web.Response:
        _need(request, Role.OPERATOR)
        devices = await asyncio.to_thread(self.repo.devices)
        return web.json_response([
            {"id": d.id, "labels": dict(d.labels), "last_seen": d.last_seen, "converged": d.converged,
             "last_error": d.last_error, "apps": d.answer.get("apps", []), "state": d.state}
            for d in devices
        ])  # fmt: skip


def _answer_json(resolution: Resolution, origin: str) -> dict[str, Any]:
    def url(package: Package) -> str:
        return package.url or f"{origin}/v1/blobs/{package.sha256}"

    return {
        "apps": [
            {"name": r.app, "package": r.package.id, "version": r.package.version, "sha256": r.package.sha256,
             "url": url(r.package), "start": r.start, "specs": list(r.specs)}
            for r in resolution.apps
        ],
        "problems": [{"app": p.app, "kind": p.kind, "message": p.message} for p in resolution.problems],
    }  # fmt: skip


def _new_package(name: object, raw_labels: object, version: object, sha256: str, url: str, size: int) -> Package:
    if len(sha256) != 64 or not set(sha256) <= HEX64:
        raise FleetError("sha256 must be 64 lowercase hex digits")
    if not isinstance(version, str) or len(version) > 64:
        raise FleetError("version must be a string of at most 64 characters")
    # labels() checks every name and value at run time, so JSON or query input may be handed over as is
    unchecked = cast("Mapping[str, str] | None", raw_labels)
    package_labels = raw_labels if isinstance(raw_labels, tuple) else labels(unchecked)
    return Package(check_name(name, "package"), package_labels, version, sha256, url, size)


def _need(request: web.Request, role: Role) -> TokenRecord:
    token = request[TOKEN]
    if token.role is not role:
        raise web.HTTPForbidden(
            text=json.dumps({"error": f"needs a {role.value} token"}), content_type="application/json"
        )
    return token


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise FleetError("the body is not JSON") from None


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _origin(request: web.Request, public_url: str) -> str:
    return public_url.rstrip("/") if public_url else f"{request.scheme}://{request.host}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
