"""The container log writer: the cap holds after every write, and the files together hold
the newest output in order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dsm_tr181.runtimes.logread import read_chunk
from dsm_tr181.runtimes.logrotate import backup_path
from dsm_tr181.runtimes.logshim import CappedLog

pytestmark = pytest.mark.unit


def _all(log: Path, backups: int) -> bytes:
    files = [backup_path(log, i) for i in range(backups, 0, -1)] + [log]
    return b"".join(path.read_bytes() for path in files if path.exists())


def test_the_cap_holds_after_every_write_and_the_newest_output_is_kept(tmp_path: Path) -> None:
    log, cap, backups = tmp_path / "eu.log", 1000, 2
    writer = CappedLog(str(log), cap, backups)
    rng = random.Random(7)
    lines = [f"line {n} {'x' * rng.randrange(0, 60)}\n".encode() for n in range(2000)]
    stream = b"".join(lines)
    position = 0
    while position < len(stream):
        size = rng.randrange(1, 700)
        writer.write(stream[position : position + size])
        position += size
        assert log.stat().st_size <= cap
        assert all(not p.exists() or p.stat().st_size <= cap for p in (backup_path(log, 1), backup_path(log, 2)))
    assert not backup_path(log, 3).exists()
    kept = _all(log, backups)
    assert stream.endswith(kept)  # in order, nothing missing in what is kept
    assert len(kept) > cap * 2


def test_a_line_longer_than_the_cap_is_split(tmp_path: Path) -> None:
    log = tmp_path / "eu.log"
    writer = CappedLog(str(log), 100, 1)
    writer.write(b"y" * 250 + b"\n")
    assert log.read_bytes() == b"y" * 50 + b"\n"
    assert backup_path(log, 1).read_bytes() == b"y" * 100


def test_reading_follows_the_files_across_rotations(tmp_path: Path) -> None:
    log = tmp_path / "eu.log"
    writer = CappedLog(str(log), 64, 3)
    writer.write(b"first line\n")
    chunk = read_chunk(log, 3, None)
    assert chunk["data"] == "first line\n" and not chunk["more"]
    for n in range(20):  # several rotations while nobody reads
        writer.write(f"line {n:02d}\n".encode())
    seen = chunk["data"]
    cursor = chunk["cursor"]
    while True:
        chunk = read_chunk(log, 3, cursor)
        seen += chunk["data"]
        cursor = chunk["cursor"]
        if not chunk["more"]:
            break
    # What was read after the first line is still there: it continues in order, no repeats.
    following = [line for line in seen.splitlines() if line.startswith("line")]
    assert following == [f"line {n:02d}" for n in range(20)][-len(following) :]
    assert following[-1] == "line 19"
