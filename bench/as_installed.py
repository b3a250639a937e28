"""Run the product as an installed one runs: from compiled bytecode.

A wheel installed by pip (or a Yocto image) ships ``.pyc`` files; a development tree run
with ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines) compiles every module at every
start instead, which counts against ``dsmcli``'s start-up and the daemon's restart but is
no cost a device pays. Benches that start the product call :func:`compiled` first.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dsm_tr181"


def compiled() -> None:
    """Compile the package's bytecode and let the processes this bench starts use it."""
    compileall.compile_dir(PACKAGE, quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
