"""The rbus binding against rbus's real headers, compiled by gcc: every struct the cdef lays out
(size, and the offset of every field it declares) and every enum constant it declares.

The headers come from ``DSM_RBUS_INCLUDE`` (the directory holding rbus.h), or from the prefix
of ``DSM_RBUS_LIBRARY`` (``<prefix>/lib/librbus.so.0`` -> ``<prefix>/include/rbus``).
Without them the test is skipped visibly: rbus is not packaged for Debian, and the binding's
own LAYOUTS table (dsm_tr181/buses/rbus_ffi.py) is then what load time checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dsm_tr181.buses.rbus_ffi import ffi

pytestmark = pytest.mark.unit


def rbus_include() -> Path | None:
    candidates = []
    if os.environ.get("DSM_RBUS_INCLUDE"):
        candidates.append(Path(os.environ["DSM_RBUS_INCLUDE"]))
    if os.environ.get("DSM_RBUS_LIBRARY"):
        library = Path(os.environ["DSM_RBUS_LIBRARY"]).resolve()
        for prefix in (library.parent.parent, library.parent.parent.parent):
            candidates += [prefix / "include" / "rbus", prefix / "include"]
    return next((path for path in candidates if (path / "rbus.h").exists()), None)


def declared() -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """The cdef's struct typedefs with their fields, and its enums with their constants."""
    typedefs, _structs, _unions = ffi.list_types()
    structs: dict[str, list[str]] = {}
    enums: dict[str, dict[str, int]] = {}
    for name in typedefs:
        ctype = ffi.typeof(name)
        if ctype.kind == "struct":
            structs[name] = [field for field, _ in ctype.fields]
        elif ctype.kind == "enum":
            enums[name] = {constant: value for value, constant in ctype.elements.items()}
    return structs, enums


def test_the_binding_lays_out_and_numbers_everything_as_the_headers_do(tmp_path: Path) -> None:
    include = rbus_include()
    if include is None:
        pytest.skip("no rbus headers: set DSM_RBUS_INCLUDE (or DSM_RBUS_LIBRARY under an rbus install prefix)")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    structs, enums = declared()
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <rbus.h>", "int main(void) {"]
    for struct, fields in structs.items():
        lines.append(f'    printf("size {struct} %zu\\n", sizeof({struct}));')
        lines += [f'    printf("offset {struct}.{f} %zu\\n", offsetof({struct}, {f}));' for f in fields]
    for constants in enums.values():
        lines += [f'    printf("enum {c} %lld\\n", (long long){c});' for c in constants]
    lines += ["    return 0;", "}"]
    source, binary = tmp_path / "layout.c", tmp_path / "layout"
    source.write_text("\n".join(lines) + "\n")
    includes = [f"-I{include}", f"-I{include.parent}"]
    subprocess.run(["gcc", *includes, str(source), "-o", str(binary)], check=True, capture_output=True, text=True)
    measured = dict(line.rsplit(" ", 1) for line in subprocess.run(
        [str(binary)], check=True, capture_output=True, text=True).stdout.splitlines())  # fmt: skip

    expected = {f"size {s}": str(ffi.sizeof(s)) for s in structs}
    expected |= {f"offset {s}.{f}": str(ffi.offsetof(s, f)) for s, fields in structs.items() for f in fields}
    expected |= {f"enum {c}": str(v) for constants in enums.values() for c, v in constants.items()}
    assert {key: measured[key] for key in expected} == expected
