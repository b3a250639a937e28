"""The daemon imports what a default start needs: the heavy optional parts load when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsm_tr181.signing import truststore

pytestmark = pytest.mark.unit


def test_the_daemon_starts_without_pyroute2_or_cryptography() -> None:
    """pyroute2 (~20 MiB of RSS) loads with the first bridged network, cryptography's x509
    (~14 MiB) with the first certificate of the trust store, and with asn1crypto the first
    signed install: not with the daemon or its packagers."""
    heavy = ["pyroute2", "cryptography", "asn1crypto"]
    modules = "dsm_tr181.daemon, dsm_tr181.packagers.tar, dsm_tr181.packagers.image"
    probe = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_an_empty_trust_store_needs_no_certificate_library(tmp_path: Path) -> None:
    probe = "import pathlib, sys; from dsm_tr181.signing import truststore; "
    probe += "truststore.load(pathlib.Path(sys.argv[1])); print('cryptography' in sys.modules)"
    command = [sys.executable, "-c", probe, str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
    assert truststore.load(tmp_path) == []


@pytest.mark.parametrize("module", ["dsm_tr181.buses.dbus", "dsm_tr181.runtimes.dobby", "dsm_tr181.buses.dbus_columns"])
def test_gi_loads_without_cairo(module: str) -> None:
    """pip's PyGObject pulls in pycairo, and ``import gi`` then maps cairo, pixman, freetype
    and libX11 (2.6 MiB of RSS): the D-Bus bus and the Dobby runtime load gi without it."""
    installed = subprocess.run([sys.executable, "-c", "import cairo"], capture_output=True, timeout=60)
    if installed.returncode != 0:
        pytest.skip("pycairo is not installed here: gi could not load cairo anyway")
    probe = (
        f"import sys, {module}; from dsm_tr181.gi_repository import GLib; "
        "assert GLib.Variant('s', 'x').unpack() == 'x'; "
        "print('cairo' in sys.modules, any('libcairo' in line for line in open('/proc/self/maps')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_product_takes_gi_from_one_module() -> None:
    """Only gi_repository imports gi itself, so cairo is kept out whichever module loads first."""
    package = Path(__file__).resolve().parents[2] / "dsm_tr181"
    importers = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if any(line.startswith(("from gi", "import gi")) for line in path.read_text().splitlines())
    ]
    assert importers == ["gi_repository.py"]
