"""The repository interface behaves the same on SQLite and on a real PostgreSQL; two API
processes on one PostgreSQL database serve one repository."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from dsm_tr181.fleet.model import App, FleetError, Package, Spec, labels
from dsm_tr181.fleet.repository import Exists, Repository, Role, TokenRecord
from tests.support.fleetserver import FleetServer
from tests.support.httpserver import TlsFiles
from tests.support.postgres import Postgres

pytestmark = pytest.mark.integration


def package(name: str, blob: bytes, **label_values: str) -> Package:
    return Package(name, labels(label_values), "1", hashlib.sha256(blob).hexdigest(), "", len(blob))


def test_packages_blobs_and_revisions(repository: Repository) -> None:
    start = repository.revision()
    web = package("web", b"one", arch="arm64")
    repository.add_package(web, b"one")
    assert repository.revision() == start + 1
    assert repository.packages() == [web] and repository.package(web.id) == web
    assert repository.blob(web.sha256) == b"one"
    with pytest.raises(Exists):
        repository.add_package(package("web", b"two", arch="arm64"), b"two")
    newer = package("web", b"two", arch="arm64")
    repository.add_package(newer, b"two", replace=True)
    assert repository.package(web.id) == newer and repository.blob(web.sha256) is None  # old blob dropped
    shared = package("db", b"two")  # same content, another package: one blob
    repository.add_package(shared, b"two")
    assert repository.delete_package(newer.id) and repository.blob(newer.sha256) == b"two"
    assert repository.delete_package(shared.id) and repository.blob(shared.sha256) is None
    assert not repository.delete_package(shared.id)
    by_url = Package("img", (), "3", "a" * 64, "https://example.invalid/img.tar")
    repository.add_package(by_url, None)
    assert repository.package(by_url.id) == by_url and repository.blob("a" * 64) is None


def test_specs_tokens_devices(repository: Repository) -> None:
    spec = Spec("eu", labels({"fleet": "eu"}), (App("web", labels({"tier": "gold"}), False),))
    assert repository.put_spec(spec) is True and repository.put_spec(spec) is False
    assert repository.specs() == [spec] and repository.spec("eu") == spec
    before = repository.revision()
    assert repository.delete_spec("eu") and repository.revision() == before + 1 and repository.spec("eu") is None

    with pytest.raises(FleetError, match="bind it to its labels"):  # unbound, it could claim any fleet
        repository.add_token("h0", TokenRecord("dev-0", Role.DEVICE))
    repository.add_token("h1", TokenRecord("dev-1", Role.DEVICE, labels({"fleet": "eu"})))
    with pytest.raises(Exists):
        repository.add_token("h2", TokenRecord("dev-1", Role.OPERATOR))
    assert repository.token("h1") == TokenRecord("dev-1", Role.DEVICE, (("fleet", "eu"),))
    assert repository.token("h2") is None
    assert repository.delete_token("dev-1") and repository.tokens() == []

    answer = {"apps": [{"name": "web", "package": "web-1", "sha256": "0" * 64}], "problems": []}
    repository.device_seen("dev-1", labels({"fleet": "eu"}), answer, 100.0)
    record = repository.device("dev-1")
    assert record is not None and record.answer == answer and not record.converged
    repository.device_report("dev-1", {"installed": [{"app": "web", "package": "web-1"}], "failures": []}, 101.0)
    record = repository.devices()[0]
    assert record.converged and record.last_seen == 101.0 and record.labels == (("fleet", "eu"),)


def test_two_api_processes_share_one_postgres(tmp_path: Path, fleet_tls: TlsFiles, postgres: Postgres) -> None:
    dsn = postgres.new_database()
    first = FleetServer(tmp_path / "a", fleet_tls, dsn).start()
    second = FleetServer(tmp_path / "b", fleet_tls, dsn)
    second.operator = first.operator  # the same database: the same tokens
    second.start()
    try:
        archive = tmp_path / "web.tar"
        archive.write_bytes(b"web archive")
        first.cli("package", "push", str(archive), "--name", "web")
        (tmp_path / "spec.yaml").write_text("id: all\napps: [{name: web}]\n")
        first.cli("spec", "apply", "-f", str(tmp_path / "spec.yaml"))
        device = second.client(first.token("dev-1", "device", "fleet=eu"))
        deadline = time.monotonic() + 10
        while not (answer := device.request("POST", "/v1/resolve", {"labels": {}}).json())["apps"]:
            assert time.monotonic() < deadline, "the second process never saw the first one's change"
            time.sleep(0.2)
        assert device.request("GET", f"/v1/blobs/{answer['apps'][0]['sha256']}").body == b"web archive"
        assert [d["id"] for d in first.client().request("GET", "/v1/devices").json()] == ["dev-1"]
    finally:
        first.stop()
        second.stop()
