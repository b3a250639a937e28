"""Items 6 and 11: what a DU URL may carry besides where the archive is.

A pre-signed URL's query is a credential: it is never logged, ``DeploymentUnit.{i}.URL``
serves the URL without it, and the full URL is stored sealed (as passwords are), so an
Update() without a URL still fetches with the token. A ``#sha256=<hex>`` fragment is the
archive's expected digest, checked before anything is unpacked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm_tr181.errors import FaultCode
from tests.adversarial.archives import bundle_members, tar_bytes
from tests.integration.lcm_helpers import DU, install, operate, rows, top_entries, value
from tests.support.daemon import DsmDaemon
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.integration

TOKEN = "S3cret-t0ken-9fq2"


@pytest.fixture(scope="module")
def server(work: Path) -> Iterator[FileServer]:
    served = work / "served"
    served.mkdir()
    (served / "app.tar").write_bytes(tar_bytes(bundle_members()))
    with FileServer(served) as running:
        yield running


def secret_leaks(dsm: DsmDaemon) -> list[str]:
    """Where TOKEN can be read in clear: the daemon's log and its state directory."""
    places = ["log"] if TOKEN in dsm.log() else []
    for path in dsm.state.rglob("*"):
        if path.is_file() and TOKEN.encode() in path.read_bytes():
            places.append(str(path))
    return places


def test_a_query_token_is_never_logged_served_or_stored_in_clear(dsm: DsmDaemon, server: FileServer) -> None:
    failed = install(dsm, server.url("missing.tar") + f"?token={TOKEN}")
    assert failed.fault is not None and TOKEN not in str(failed.fault)

    url = server.url("app.tar") + f"?X-Amz-Signature={TOKEN}&expires=1"
    outcome = install(dsm, url)
    assert outcome.ok, outcome
    (du,) = rows(dsm, DU)
    assert value(dsm, du + "URL") == server.url("app.tar")  # served without the query
    assert secret_leaks(dsm) == []

    server.requests.clear()
    update = operate(dsm, du + "Update()")  # no URL: the sealed full URL, token included, is fetched
    assert update.fault is not None and update.fault["code"] == FaultCode.DUPLICATE_DU.usp  # same version
    assert [r.query for r in server.requests if r.path == "/app.tar"] == [f"X-Amz-Signature={TOKEN}&expires=1"]
    assert operate(dsm, du + "Uninstall()").ok
    assert secret_leaks(dsm) == []


def test_a_digest_in_the_url_fragment_is_verified_before_unpacking(dsm: DsmDaemon, server: FileServer) -> None:
    digest = hashlib.sha256((server.root / "app.tar").read_bytes()).hexdigest()
    wrong = install(dsm, server.url("app.tar") + "#sha256=" + "0" * 64)
    assert wrong.fault is not None and wrong.fault["code"] == FaultCode.CORRUPT_DATA.usp, wrong
    assert "expected " + "0" * 64 in wrong.fault["message"]
    assert rows(dsm, DU) == [] and top_entries(dsm.state / "bundles") == []

    malformed = install(dsm, server.url("app.tar") + "#sha256=xyz")
    assert malformed.fault is not None and malformed.fault["code"] == FaultCode.INVALID_ARGUMENTS.usp

    right = install(dsm, server.url("app.tar") + "#sha256=" + digest.upper())
    assert right.ok, right
    (du,) = rows(dsm, DU)
    assert value(dsm, du + "URL") == server.url("app.tar")
    assert f"{server.url('app.tar')}: sha256 {digest} (verified)" in dsm.log()
    assert operate(dsm, du + "Uninstall()").ok
