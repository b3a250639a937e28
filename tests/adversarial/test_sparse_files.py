"""Item 10: a 10 KB archive holding a 900 MiB sparse file takes the blocks of its data, not 900 MiB.

Sparse members (GNU and pax formats, written by GNU tar -S) are written with their holes
left as holes, and count against ``max_unpacked_bytes`` by the data they hold."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dsm_tr181.packagers.extract import ExtractLimits, extract_archive
from dsm_tr181.packagers.worker import Cancel

pytestmark = pytest.mark.unit

APPARENT = 900 << 20


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("form", ["gnu", "posix"])
def test_a_sparse_member_keeps_its_holes_and_counts_its_data(tmp_path: Path, form: str) -> None:
    source = tmp_path / "src"
    (source / "rootfs").mkdir(parents=True)
    with (source / "rootfs" / "disk.img").open("wb") as image:
        image.truncate(APPARENT)
        image.seek(123 << 20)
        image.write(b"data in the middle")
    archive = tmp_path / f"{form}.tar"
    subprocess.run(["tar", "-S", f"--format={form}", "-cf", str(archive), "-C", str(source), "."], check=True)
    assert archive.stat().st_size < 32 * 1024

    staging = tmp_path / "staging"
    staging.mkdir()
    with archive.open("rb") as file:  # the whole limit is 1 MiB: far below the apparent size
        extracted = extract_archive(file, staging, ExtractLimits(1 << 20, 100, False), form, Cancel())
    unpacked = staging / "rootfs" / "disk.img"
    info = os.stat(unpacked)
    assert info.st_size == APPARENT
    assert info.st_blocks * 512 <= 64 * 1024  # the data's blocks, not 900 MiB
    assert extracted.unpacked_bytes <= 64 * 1024
    with unpacked.open("rb") as image:
        image.seek(123 << 20)
        assert image.read(18) == b"data in the middle"
        image.seek(APPARENT - 4)
        assert image.read() == b"\0" * 4
