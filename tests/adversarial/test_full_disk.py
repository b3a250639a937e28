"""Item 2: the store's file system fills up (a 1 MiB tmpfs under the state directory).

A write the store refuses leaves the tree and the records exactly as before and answers
the standard's fault (7005 Resources Exceeded for a Set or a refused command); nothing is
half-made (no row, no "Updating"/"Uninstalling" DU); reads keep working; and once space
returns the same requests succeed without a restart."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dsm_tr181.control_client import DaemonError
from dsm_tr181.errors import FaultCode
from tests.adversarial.archives import bundle_members, tar_bytes, write
from tests.integration.lcm_helpers import DU, eu_of, install, operate, row, rows, top_entries, value
from tests.support.daemon import DsmDaemon

pytestmark = pytest.mark.integration

FULL = FaultCode.RESOURCES_EXCEEDED.usp


def fill(directory: Path) -> Path:
    """Write to ``directory`` until its file system has no byte left."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with filler.open("ab", buffering=0) as out:  # and the last partial block
        try:
            while True:
                out.write(b"\0")
        except OSError:
            pass
    return filler


def set_fault(dsm: DsmDaemon, path: str, text: str) -> dict[str, object] | None:
    try:
        dsm.call("set", {"values": {path: text}})
    except DaemonError as error:
        return error.fault
    return None


def test_a_full_store_changes_nothing_answers_7005_and_recovers_by_itself(
    small_filesystem: Path, tmp_path: Path
) -> None:
    state = small_filesystem / "state"
    dsm = DsmDaemon(tmp_path, lcm={"bundle_dir": str(tmp_path / "bundles"), "log_dir": str(tmp_path / "logs")})
    dsm.state, dsm.runc_root = state, state / "oci-runc" / "root"
    dsm.config.write_text(dsm.config.read_text().replace(str(tmp_path / "state"), str(state)))
    good = f"file://{write(tmp_path, 'good', tar_bytes(bundle_members()))}"
    other = f"file://{write(tmp_path, 'other', tar_bytes(bundle_members()[:2]))}"
    dsm.start()
    try:
        assert install(dsm, good).ok
        (du,) = rows(dsm, DU)
        eu = eu_of(dsm, du)
        before = {"du": row(dsm, du), "eu": row(dsm, eu)}
        filler = fill(small_filesystem)

        fault = set_fault(dsm, eu + "AutoStart", "true")
        assert fault is not None and fault["code"] == FULL, fault
        assert value(dsm, eu + "AutoStart") == "false"  # the tree is as before

        refused = install(dsm, other)
        assert refused.fault is not None and refused.fault["code"] == FULL, refused
        for command in ("Update()", "Uninstall()"):
            outcome = operate(dsm, du + command, {"URL": other} if command == "Update()" else {})
            assert outcome.fault is not None and outcome.fault["code"] == FULL, (command, outcome)
        assert rows(dsm, DU) == [du]
        assert {"du": row(dsm, du), "eu": row(dsm, eu)} == before  # not Updating, not Uninstalling
        assert top_entries(tmp_path / "bundles") == [du.rstrip(".").rpartition(".")[2]]

        os.unlink(filler)  # space returns: no restart needed
        assert set_fault(dsm, eu + "AutoStart", "true") is None
        assert value(dsm, eu + "AutoStart") == "true"
        assert operate(dsm, du + "Uninstall()").ok
        assert install(dsm, good).ok

        dsm.stop()  # and what was written is what the next start finds
        dsm.start()
        (again,) = rows(dsm, DU)
        assert row(dsm, again)["Status"] == "Installed"
        assert "Traceback" not in dsm.log()
    finally:
        dsm.cleanup()
