"""USP path grammar: parsing, formatting, malformed input, property tests."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm_tr181.errors import Fault, FaultCode
from dsm_tr181.tree.paths import (
    AliasRef,
    Condition,
    Instance,
    Name,
    Path,
    PathKind,
    RefFollow,
    Search,
    Wildcard,
    parse_path,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Device.SoftwareModules.", PathKind.OBJECT),
        ("Device.SoftwareModules.DeploymentUnit.1.Name", PathKind.PARAMETER),
        ("Device.SoftwareModules.InstallDU()", PathKind.COMMAND),
        ("Device.SoftwareModules.DUStateChange!", PathKind.EVENT),
        ("Device.SoftwareModules.ExecutionUnit.*.Status", PathKind.PARAMETER),
        ("Device.SoftwareModules.DeploymentUnit.[cpe-web].Update()", PathKind.COMMAND),
    ],
)
def test_kinds(text: str, kind: PathKind) -> None:
    path = parse_path(text)
    assert path.kind is kind
    assert str(path) == text


def test_search_expression_structure() -> None:
    path = parse_path('Device.SoftwareModules.DeploymentUnit.[Status=="Installed"&&Vendor=="rdk"].Name')
    search = path.segments[3]
    assert search == Search(
        (
            Condition((Name("Status"),), "==", "Installed", True),
            Condition((Name("Vendor"),), "==", "rdk", True),
        )
    )
    assert path.is_search and path.leaf == "Name"


def test_operators_whitespace_and_unquoted_constants() -> None:
    for op in ("==", "!=", "~=", "<", ">", "<=", ">="):
        path = parse_path(f"Device.A.[ N {op} 3 ].B")
        condition = path.segments[2].conditions[0]  # type: ignore[union-attr]
        assert condition.operator == op and condition.literal == "3" and not condition.quoted
    stamp = parse_path("Device.A.[T<2021-06-06T08:00:00Z].")
    assert stamp.segments[2].conditions[0].literal == "2021-06-06T08:00:00Z"  # type: ignore[union-attr]


def test_percent_escapes_in_strings() -> None:
    path = parse_path('Device.A.[S=="50%25 %22off%22"].')
    assert path.segments[2].conditions[0].literal == '50% "off"'  # type: ignore[union-attr]
    assert parse_path(str(path)) == path


def test_reference_following() -> None:
    path = parse_path("Device.A.1.Ref+.Name")
    assert path.segments[3] == Name("Ref", RefFollow(1))
    assert parse_path("Device.A.1.Refs#2+.Name").segments[3] == Name("Refs", RefFollow(2))
    assert parse_path("Device.A.1.Refs#*+.Name").segments[3] == Name("Refs", RefFollow(None))
    nested = parse_path('Device.A.[B+.C=="x"].D')
    assert nested.segments[2].conditions[0].relpath == (Name("B", RefFollow(1)), Name("C"))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "Device",
        "Device..A",
        ".Device.A",
        "Device.0.",
        "Device.01.",
        "Device.A.[].",
        "Device.A.[B==].",
        "Device.A.[B=1].",
        "Device.A.[B==1&&].",
        'Device.A.[B=="x].',
        "Device.A.[B==1",
        "Device.A.B()C",
        "Device.A.B(",
        "Device.A!B",
        "Device.A.B#0+.C",
        "Device.A.B#+.C",
        "Device.A.B#3.C",
        "Device.A.*()",
        "Device.A.1",
        "Device A.B",
        "Device.A.B+",
    ],
)
def test_malformed_paths_give_7008(text: str) -> None:
    with pytest.raises(Fault) as info:
        parse_path(text)
    assert info.value.code is FaultCode.INVALID_PATH_SYNTAX
    assert "position" in info.value.message


def test_non_string_and_huge_input() -> None:
    with pytest.raises(Fault):
        parse_path(None)  # type: ignore[arg-type]
    with pytest.raises(Fault):
        parse_path("Device." + "A." * 5000)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from('Device.AB1*[]"=!<>~&#+()_ %2-'), max_size=60) | st.text(max_size=40))
def test_random_input_only_ever_raises_the_fault_type(text: str) -> None:
    try:
        path = parse_path(text)
    except Fault as fault:
        assert fault.code is FaultCode.INVALID_PATH_SYNTAX
    else:
        assert parse_path(str(path)) == path


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
literals = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
conditions = st.builds(
    Condition,
    relpath=st.lists(st.builds(Name, names), min_size=1, max_size=2).map(tuple),
    operator=st.sampled_from(["==", "!=", "~=", "<", ">", "<=", ">="]),
    literal=literals,
    quoted=st.just(True),
) | st.builds(
    Condition,
    relpath=st.builds(lambda n: (Name(n),), names),
    operator=st.sampled_from(["==", "<"]),
    literal=st.from_regex(r"-?[1-9][0-9]{0,4}", fullmatch=True),
    quoted=st.just(False),
)
selectors = st.one_of(
    st.builds(Instance, st.integers(1, 10**6)),
    st.just(Wildcard()),
    st.builds(AliasRef, st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)),
    st.builds(Search, st.lists(conditions, min_size=1, max_size=3).map(tuple)),
)


@st.composite
def valid_paths(draw: st.DrawFn) -> Path:
    segments: list = [Name("Device")]
    for _ in range(draw(st.integers(0, 4))):
        segments.append(Name(draw(names)))
        if draw(st.booleans()):
            segments.append(draw(selectors))
    kind = draw(st.sampled_from(list(PathKind)))
    if kind is not PathKind.OBJECT:
        follow = draw(st.none() | st.builds(RefFollow, st.none() | st.integers(1, 9)))
        if follow is not None and kind is PathKind.PARAMETER and len(segments) > 1:
            segments.append(Name(draw(names), follow))
        segments.append(Name(draw(names)))
    return Path(tuple(segments), kind)


@settings(max_examples=300, deadline=None)
@given(valid_paths())
def test_generated_paths_round_trip(path: Path) -> None:
    assert parse_path(str(path)) == path
