"""GLib and Gio from PyGObject, without PyGObject's cairo support.

``import gi`` loads ``gi._gi_cairo`` whenever pycairo is installed (pip's PyGObject
requires it), which maps cairo, pixman, freetype and libX11 into the process: 2.6 MiB of
RSS for types no D-Bus or Dobby call uses. Marked absent, the module is skipped by gi as it
is where pycairo is not installed. Every module of this package takes GLib and Gio from
here, so the mark is made before gi loads whichever adapter comes first.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("gi._gi_cairo", None)  # type: ignore[arg-type]  # None: "not importable"

from gi.repository import Gio, GLib  # noqa: E402

__all__ = ["GLib", "Gio"]
