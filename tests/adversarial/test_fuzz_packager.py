"""Item 1, fuzzing: no archive makes the packager's reader raise anything but a Fault.

Hypothesis builds tar archives with forged pax headers (paths, link targets, ids,
times and sizes no file system would hold), flips bytes of a valid archive, and
writes config.json / manifest.json deep, wide or not quite JSON. Each goes through
extraction and the bundle reader as an install does; the outcome must be a bundle or
a :class:`Fault` — never another exception, which is what left installs stuck."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsm_tr181.errors import Fault
from dsm_tr181.packagers.bundle import describe, locate
from dsm_tr181.packagers.extract import ExtractLimits, extract_archive
from dsm_tr181.packagers.worker import Cancel
from tests.adversarial.archives import CONFIG, bundle_members, deep_json, member, tar_bytes

pytestmark = pytest.mark.unit

LIMITS = ExtractLimits(max_unpacked_bytes=1 << 20, max_entries=200, allow_special_files=False)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WEIRD_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["nan", "inf", "-inf", "-1", str(10**20), str(2**64), "1e400", "", "\0", "a\0b", "../x", "/etc", "BINARY"]
)
PAX_KEYS = st.sampled_from(
    ["path", "linkpath", "uid", "gid", "mtime", "atime", "size", "uname", "gname", "GNU.sparse.map",
     "GNU.sparse.size", "GNU.sparse.name", "GNU.sparse.major", "GNU.sparse.minor", "hdrcharset", "comment"]
)  # fmt: skip
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
                         tarfile.CHRTYPE, b"Z"])  # fmt: skip


def read_bundle(data: bytes) -> None:
    """What an install does with an archive: extract, find the bundle, describe it."""
    with tempfile.TemporaryDirectory() as temp:
        staging = Path(temp) / "staging"
        staging.mkdir()
        try:
            extracted = extract_archive(io.BytesIO(data), staging, LIMITS, "fuzz", Cancel())
            layout = locate(staging, "fuzz")
            describe(layout, path=Path(temp) / "bundle", fallback_name="fuzz", digest="0" * 64,
                     unpacked_bytes=extracted.unpacked_bytes, symlinks=extracted.symlinks, label="fuzz")  # fmt: skip
        except Fault:
            pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@FUZZ
@given(
    st.lists(
        st.tuples(st.text(max_size=8), KINDS, st.text(max_size=8), st.dictionaries(PAX_KEYS, WEIRD_TEXT, max_size=3)),
        max_size=4,
    )
)
def test_forged_pax_headers_end_in_a_fault(extra: list[tuple[str, bytes, str, dict[str, str]]]) -> None:
    members = bundle_members()
    for name, kind, link, pax in extra:
        members.append(member(f"rootfs/{name}", b"data", kind=kind, linkname=link, pax=pax))
    read_bundle(tar_bytes(members))


VALID = tar_bytes(bundle_members())


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes_end_in_a_fault(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for offset, value in flips:
        data[offset] = value
    read_bundle(bytes(data))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(
    st.sampled_from(["config", "manifest"]),
    st.one_of(
        st.integers(1, 120_000).map(deep_json),
        st.integers(1, 50_000).map(lambda n: b"[" * n),
        st.dictionaries(st.sampled_from([*CONFIG, "annotations", "name", "version"]), JSON_VALUES, max_size=4).map(
            lambda changes: json.dumps({**CONFIG, **changes}).encode()
        ),
        st.binary(max_size=64),
        st.sampled_from([b'"\\ud800"', b'{"name": "\\udfff"}', b"NaN", b'{"a": 1e999}', b"\xff\xfe"]),
    ),
)
def test_deep_odd_or_broken_json_ends_in_a_fault(which: str, document: bytes) -> None:
    members = bundle_members(config=document) if which == "config" else bundle_members(manifest=document)
    read_bundle(tar_bytes(members))


def test_huge_json_is_refused_before_it_is_parsed() -> None:
    huge = b'{"ociVersion": "1.0.2", "pad": "' + b"x" * (5 << 20) + b'"}'
    with pytest.raises(Fault, match="larger than"), tempfile.TemporaryDirectory() as temp:
        staging = Path(temp)
        extracted = extract_archive(io.BytesIO(tar_bytes(bundle_members(config=huge))), staging,
                                    ExtractLimits(16 << 20, 10, False), "huge", Cancel())  # fmt: skip
        describe(locate(staging, "huge"), path=staging / "b", fallback_name="b", digest="0" * 64,
                 unpacked_bytes=extracted.unpacked_bytes, symlinks=extracted.symlinks, label="huge")  # fmt: skip
