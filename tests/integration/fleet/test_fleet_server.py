"""The repository server as a real process over HTTPS, driven by its API and by ``dsm-fleet``,
on SQLite and on a real PostgreSQL (``any_fleet``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dsm_tr181.fleet.client import FleetApiError, FleetClient
from tests.support.fleetserver import FleetServer
from tests.support.httpserver import TlsFiles

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(any_fleet: FleetServer) -> FleetServer:
    """Here every server test runs on SQLite and on PostgreSQL."""
    return any_fleet


def push(fleet: FleetServer, tmp_path: Path, name: str, labels: str, content: bytes, version: str = "1") -> dict:
    archive = tmp_path / f"{name}-{hashlib.sha256(content).hexdigest()[:8]}.tar"
    archive.write_bytes(content)
    return fleet.push(archive, name, labels, version)


def test_operator_pushes_and_device_resolves_with_etag(fleet: FleetServer, tmp_path: Path) -> None:
    (tmp_path / "generic.tar").write_bytes(b"generic")
    generic = json.loads(fleet.cli("package", "push", str(tmp_path / "generic.tar"), "--name", "web").stdout)
    arm = push(fleet, tmp_path, "web", "arch=arm64", b"arm build", "2")
    assert arm["sha256"] == hashlib.sha256(b"arm build").hexdigest() and arm["size"] == 9
    spec = tmp_path / "spec.yaml"
    spec.write_text("id: eu\ntarget: {fleet: eu}\napps:\n  - name: web\n")
    fleet.cli("spec", "apply", "-f", str(spec))
    assert [s["id"] for s in json.loads(fleet.cli("spec", "list").stdout)] == ["eu"]
    listed = {p["id"] for p in json.loads(fleet.cli("package", "list").stdout)}
    assert listed == {generic["id"], arm["id"]}

    assert fleet.client().request("GET", f"/v1/packages/{arm['id']}").json() == arm
    spec_apps = fleet.client().request("GET", "/v1/specs/eu").json()["apps"]
    assert spec_apps == [{"name": "web", "labels": {}, "start": True}]
    dry = json.loads(fleet.cli("resolve", "--labels", "fleet=eu,arch=x86_64").stdout)
    assert [(a["name"], a["package"]) for a in dry["apps"]] == [("web", generic["id"])]

    device = fleet.client(fleet.token("dev-1", "device", "fleet=eu"))
    reply = device.request("POST", "/v1/resolve", {"labels": {"fleet": "eu", "arch": "arm64"}})
    answer, etag = reply.json(), reply.headers["etag"]
    assert answer["apps"][0]["package"] == arm["id"] and answer["apps"][0]["version"] == "2"
    assert answer["apps"][0]["url"] == f"{fleet.url}/v1/blobs/{arm['sha256']}"
    again = device.request("POST", "/v1/resolve", {"labels": {"fleet": "eu", "arch": "arm64"}},
                           headers={"If-None-Match": etag})  # fmt: skip
    assert again.status == 304 and again.body == b""
    # the blob: the device may fetch what it was told to run (and its checksum), nothing else
    assert device.request("GET", f"/v1/blobs/{arm['sha256']}").body == b"arm build"
    checksum = device.request("GET", f"/v1/blobs/{arm['sha256']}.sha256").body.decode()
    assert checksum.split()[0] == arm["sha256"]
    with pytest.raises(FleetApiError) as denied:
        device.request("GET", f"/v1/blobs/{generic['sha256']}")
    assert denied.value.status == 403

    # a spec change changes the answer and its ETag
    spec.write_text("id: eu\ntarget: {fleet: eu}\napps:\n  - name: web\n    start: false\n")
    fleet.apply(spec.read_text())
    changed = device.request("POST", "/v1/resolve", {"labels": {"fleet": "eu", "arch": "arm64"}},
                             headers={"If-None-Match": etag})  # fmt: skip
    assert changed.status == 200 and changed.headers["etag"] != etag and changed.json()["apps"][0]["start"] is False

    fleet.cli("package", "rm", arm["id"])
    after = device.request("POST", "/v1/resolve", {"labels": {"fleet": "eu", "arch": "arm64"}}).json()
    assert after["apps"][0]["package"] == generic["id"]
    with pytest.raises(FleetApiError) as gone:
        fleet.client().request("GET", f"/v1/blobs/{arm['sha256']}")
    assert gone.value.status == 404  # the blob went with its last package


def test_roles_and_tokens(fleet: FleetServer, tmp_path: Path) -> None:
    device_token = fleet.token("dev-1", "device", "fleet=eu")
    device = fleet.client(device_token)
    with pytest.raises(FleetApiError) as anonymous:
        FleetClient(fleet.url, "dsmf_wrong", fleet.ca).request("GET", "/v1/packages")
    assert anonymous.value.status == 401
    for method, path in (("GET", "/v1/packages"), ("GET", "/v1/devices"), ("GET", "/v1/specs")):
        with pytest.raises(FleetApiError) as forbidden:
            device.request(method, path)
        assert forbidden.value.status == 403
    refused = fleet.cli("package", "push", str(tmp_path), "--name", "x", token=device_token, check=False)
    assert refused.returncode == 1
    with pytest.raises(FleetApiError) as operator_report:
        fleet.client().request("POST", "/v1/devices/self/state", {"installed": []})
    assert operator_report.value.status == 403
    # tokens are made on the database by the CLI, shown once and stored hashed only
    unbound = fleet.cli("token", "add", "dev-9", "--role", "device", *fleet.store_args(), check=False)
    assert unbound.returncode == 1 and "bind it to its labels" in unbound.stderr  # could read any fleet's answer
    made = fleet.cli("token", "add", "dev-9", "--labels", "fleet=eu", *fleet.store_args()).stdout.strip()
    assert fleet.client(made).request("POST", "/v1/resolve", {"labels": {}}).status == 200
    # an unbound device token written before binding was required is refused, whatever it claims
    legacy = "dsmf_legacy-unbound-token"
    fleet.execute("INSERT INTO fleet_tokens (hash, name, role, labels) VALUES (?, 'old', 'device', '{}')",
                  hashlib.sha256(legacy.encode()).hexdigest())  # fmt: skip
    with pytest.raises(FleetApiError) as unbound_resolve:
        fleet.client(legacy).request("POST", "/v1/resolve", {"labels": {"fleet": "us"}})
    assert unbound_resolve.value.status == 403 and "bound to no labels" in str(unbound_resolve.value)
    assert "dev-9\tdevice" in fleet.cli("token", "list", *fleet.store_args()).stdout
    # a token bound to labels: the device cannot claim another fleet, and is resolved with its own
    bound = fleet.cli("token", "add", "dev-eu", "--labels", "fleet=eu", *fleet.store_args()).stdout.strip()
    with pytest.raises(FleetApiError) as other_fleet:
        fleet.client(bound).request("POST", "/v1/resolve", {"labels": {"fleet": "us"}})
    assert other_fleet.value.status == 403
    fleet.client(bound).request("POST", "/v1/resolve", {"labels": {"arch": "arm64"}})
    seen = {d["id"]: d["labels"] for d in fleet.client().request("GET", "/v1/devices").json()}
    assert seen["dev-eu"] == {"arch": "arm64", "fleet": "eu"}
    stored = fleet.stored("SELECT hash, name FROM fleet_tokens")
    assert device_token not in repr(stored) and fleet.operator not in repr(stored)
    assert (hashlib.sha256(device_token.encode()).hexdigest(), "dev-1") in stored
    # duplicate package (same name and labels) is refused unless replaced
    push(fleet, tmp_path, "web", "arch=arm64", b"one")
    archive = tmp_path / "two.tar"
    archive.write_bytes(b"two")
    dup = fleet.cli("package", "push", str(archive), "--name", "web", "--labels", "arch=arm64", check=False)
    assert dup.returncode == 1 and "exists" in dup.stderr
    replaced = fleet.cli("package", "push", str(archive), "--name", "web", "--labels", "arch=arm64", "--replace")
    assert json.loads(replaced.stdout)["sha256"] == hashlib.sha256(b"two").hexdigest()


def test_resolve_is_rate_limited(tmp_path: Path, fleet_tls: TlsFiles) -> None:
    server = FleetServer(tmp_path / "rl", fleet_tls, extra=("--resolve-rate", "0.5", "--resolve-burst", "3")).start()
    try:
        device = server.client(server.token("dev-1", "device", "fleet=eu"))
        other = server.client(server.token("dev-2", "device", "fleet=eu"))
        for _ in range(3):
            device.request("POST", "/v1/resolve", {"labels": {}})
        with pytest.raises(FleetApiError) as limited:
            device.request("POST", "/v1/resolve", {"labels": {}})
        assert limited.value.status == 429
        other.request("POST", "/v1/resolve", {"labels": {}})  # buckets are per token
    finally:
        server.stop()


def test_devices_show_problems_and_reports_and_survive_restart(fleet: FleetServer, tmp_path: Path) -> None:
    push(fleet, tmp_path, "web", "arch=arm64", b"a")
    push(fleet, tmp_path, "web", "fleet=eu", b"b")
    ok = push(fleet, tmp_path, "db", "", b"c")
    (tmp_path / "s.yaml").write_text(
        "id: base\napps: [{name: web}, {name: db}]\n---\n"
        "id: gold\ntarget: {tier: gold}\napps: [{name: db, start: false}]\n"
    )
    fleet.apply((tmp_path / "s.yaml").read_text())
    tied_token = fleet.token("tied", "device", "fleet=eu")
    tied = fleet.client(tied_token)
    answer = tied.request("POST", "/v1/resolve", {"labels": {"arch": "arm64", "fleet": "eu"}}).json()
    assert [a["name"] for a in answer["apps"]] == ["db"]
    assert [p["kind"] for p in answer["problems"]] == ["tie"]
    gold = fleet.client(fleet.token("gold", "device", "tier=gold"))
    conflict = gold.request("POST", "/v1/resolve", {"labels": {"tier": "gold"}}).json()["problems"]
    assert conflict[0]["kind"] == "conflict" and "spec base" in conflict[0]["message"]
    assert "spec gold" in conflict[0]["message"]
    tied.request("POST", "/v1/devices/self/state", {"installed": [{"app": "db", "package": ok["id"]}]})

    fleet.stop()
    fleet.start()
    table = fleet.cli("devices").stdout
    assert "tied" in table and "tie between" in table and "conflicting specs" in table
    devices = {d["id"]: d for d in fleet.client().request("GET", "/v1/devices").json()}
    assert devices["tied"]["labels"] == {"arch": "arm64", "fleet": "eu"}
    assert devices["tied"]["converged"] is False  # the tie is an error, whatever it installed
    assert devices["gold"]["converged"] is False and "spec gold" in devices["gold"]["last_error"]
    # resolve the tie by removing one package: the device reporting the answer's packages is converged
    tie_ids = [p["id"] for p in fleet.client().request("GET", "/v1/packages").json() if p["name"] == "web"]
    fleet.client().request("DELETE", f"/v1/packages/{tie_ids[0]}")
    tied = fleet.client(tied_token)  # the restarted server listens on another port
    answer = tied.request("POST", "/v1/resolve", {"labels": {"arch": "arm64", "fleet": "eu"}}).json()
    assert not answer["problems"]
    installed = [{"app": a["name"], "package": a["package"]} for a in answer["apps"]]
    tied.request("POST", "/v1/devices/self/state", {"installed": installed, "failures": []})
    devices = {d["id"]: d for d in json.loads(fleet.cli("devices", "--json").stdout)}
    assert devices["tied"]["converged"] is True and devices["tied"]["last_error"] == ""


def test_bad_input_is_refused(fleet: FleetServer, tmp_path: Path) -> None:
    operator = fleet.client()
    for body in ({"id": "s", "apps": [{"name": "bad name"}]}, {"id": "s", "target": "x"}, ["nope"]):
        with pytest.raises(FleetApiError) as bad:
            operator.request("PUT", "/v1/specs/s", body)
        assert bad.value.status == 400
    with pytest.raises(FleetApiError) as bad_ref:
        operator.request("POST", "/v1/packages", {"name": "x", "url": "ftp://x", "sha256": "0" * 64})
    assert bad_ref.value.status == 400
    by_ref = operator.request("POST", "/v1/packages", {"name": "img", "url": "https://example.invalid/i.tar",
                                                       "sha256": "a" * 64, "version": "3"}).json()  # fmt: skip
    assert by_ref["url"] == "https://example.invalid/i.tar"
    assert json.loads(fleet.cli("resolve").stdout) == {"apps": [], "problems": []}
    assert fleet.cli("spec", "rm", "missing", check=False).returncode == 1
