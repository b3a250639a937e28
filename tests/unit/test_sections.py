"""Adapter configuration sections: one checker for every adapter."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from dsm_tr181.sections import build_section

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Sample:
    flag: bool = False
    count: int = 1
    delay: float = 1.0
    name: str = "x"
    where: Path | None = None
    names: tuple[str, ...] = ()


def test_values_are_converted_to_their_field_type() -> None:
    sample = build_section(Sample, {"delay": 2, "where": "/tmp/a", "names": ["a", "b"]}, "s")
    assert sample == Sample(delay=2.0, where=Path("/tmp/a"), names=("a", "b"))
    assert isinstance(sample.delay, float)


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"colour": 1}, "s.colour: unknown key (known: flag, count, delay, name, where, names)"),
        ({"flag": 1}, "s.flag: must be true or false, not 1"),
        ({"count": True}, "s.count: must be an integer, not True"),
        ({"count": 1.5}, "s.count: must be an integer, not 1.5"),
        ({"delay": "2"}, "s.delay: must be a number, not '2'"),
        ({"name": 3}, "s.name: must be a string, not 3"),
        ({"where": ""}, "s.where: must be a path, not ''"),
        ({"names": "a"}, "s.names: must be a list of strings, not 'a'"),
        ({"names": [1]}, "s.names: must be a list of strings, not [1]"),
    ],
)
def test_bad_sections_name_the_key(section: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_section(Sample, section, "s")
    assert str(caught.value) == complaint
