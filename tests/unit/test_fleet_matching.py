"""JamesD's rule: worked cases, and the index against the literal reading (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm_tr181.fleet import matching
from dsm_tr181.fleet.matching import Catalog, resolve_naive
from dsm_tr181.fleet.model import App, FleetError, Package, Spec, labels, parse_labels, spec_from_json

pytestmark = pytest.mark.unit


def pkg(name: str, version: str = "1", **label_values: str) -> Package:
    return Package(name, labels(label_values), version, f"{name}{version}".encode().hex().ljust(64, "0")[:64])


def spec(spec_id: str, target: dict[str, str], *apps: App) -> Spec:
    return Spec(spec_id, labels(target), apps)


def both(packages: list[Package], specs: list[Spec], device: dict[str, str]):
    indexed = Catalog(packages, specs).resolve(device)
    assert indexed.key() == resolve_naive(packages, specs, device).key()
    return indexed


def test_most_specific_package_wins_with_app_labels_merged() -> None:
    packages = [pkg("web"), pkg("web", arch="arm64"), pkg("web", arch="arm64", fw="2"), pkg("web", arch="x86_64")]
    specs = [spec("all", {"fleet": "eu"}, App("web", labels({"fw": "2"})))]
    result = both(packages, specs, {"arch": "arm64", "fleet": "eu"})
    assert [(r.app, dict(r.package.labels), r.specs) for r in result.apps] == [
        ("web", {"arch": "arm64", "fw": "2"}, ("all",))
    ]
    # the app's label wins over the device's on a shared name
    result = both(packages, [spec("all", {}, App("web", labels({"arch": "x86_64"})))], {"arch": "arm64"})
    assert dict(result.apps[0].package.labels) == {"arch": "x86_64"}


def test_specs_apply_only_when_their_target_is_a_subset() -> None:
    packages = [pkg("a"), pkg("b")]
    specs = [spec("s1", {"fleet": "eu"}, App("a")), spec("s2", {"fleet": "us"}, App("b")), spec("s3", {}, App("b"))]
    result = both(packages, specs, {"fleet": "eu"})
    assert [(r.app, r.specs) for r in result.apps] == [("a", ("s1",)), ("b", ("s3",))]
    assert not result.problems


def test_tie_is_an_error_never_a_choice() -> None:
    packages = [pkg("web", arch="arm64"), pkg("web", fleet="eu"), pkg("db")]
    specs = [spec("s", {}, App("web"), App("db"))]
    result = both(packages, specs, {"arch": "arm64", "fleet": "eu"})
    assert [r.app for r in result.apps] == ["db"]
    assert [(p.app, p.kind) for p in result.problems] == [("web", "tie")]
    assert "arch=arm64" in result.problems[0].message and "fleet=eu" in result.problems[0].message


def test_conflict_names_both_specs() -> None:
    packages = [pkg("web"), pkg("web", tier="gold")]
    specs = [spec("base", {}, App("web")), spec("gold", {"fleet": "eu"}, App("web", labels({"tier": "gold"})))]
    result = both(packages, specs, {"fleet": "eu"})
    assert not result.apps
    assert result.problems[0].kind == "conflict"
    assert "spec base" in result.problems[0].message and "spec gold" in result.problems[0].message
    # the same app asked for identically by two specs is no conflict
    same = [spec("a", {}, App("web")), spec("b", {"fleet": "eu"}, App("web"))]
    assert both(packages, same, {"fleet": "eu"}).apps[0].specs == ("a", "b")


def test_no_candidate_is_reported() -> None:
    result = both([pkg("web", arch="x86_64")], [spec("s", {}, App("web"))], {"arch": "arm64"})
    assert result.problems[0].kind == "nomatch" and not result.apps


def test_input_checks() -> None:
    assert parse_labels("b=2, a=1") == (("a", "1"), ("b", "2"))
    with pytest.raises(FleetError):
        parse_labels("a")
    with pytest.raises(FleetError):
        labels([("a", "1"), ("a", "2")])
    with pytest.raises(FleetError, match="twice"):
        spec_from_json({"id": "s", "apps": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(FleetError, match="unknown"):
        spec_from_json({"id": "s", "apps": [], "selector": {}})
    parsed = spec_from_json({"id": "s", "target": {"f": "x"}, "apps": [{"name": "a", "labels": {"k": "v"}}]})
    assert parsed == Spec("s", (("f", "x"),), (App("a", (("k", "v"),), True),))


# -- property: the index answers exactly as the literal rule ------------------------------------

NAMES = st.sampled_from(["k1", "k2", "k3", "k4"])
VALUES = st.sampled_from(["a", "b", "c"])
LABELSETS = st.dictionaries(NAMES, VALUES, max_size=4)
APPS = st.sampled_from(["web", "db", "agent"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Package], list[Spec], dict[str, str]]:
    packages = {}
    for _ in range(draw(st.integers(0, 25))):
        p = Package(draw(APPS), labels(draw(LABELSETS)), draw(st.sampled_from(["1", "2"])), "0" * 64)
        packages[p.id] = p  # one package per name and labelset, as the repository keeps it
    specs = []
    for i in range(draw(st.integers(0, 8))):
        names = draw(st.lists(APPS, unique=True, max_size=3))
        apps = tuple(
            App(n, labels(draw(st.dictionaries(NAMES, VALUES, max_size=2))), draw(st.booleans())) for n in names
        )
        specs.append(Spec(f"s{i}", labels(draw(st.dictionaries(NAMES, VALUES, max_size=2))), apps))
    return list(packages.values()), specs, draw(LABELSETS)


@settings(max_examples=120, deadline=None)
@given(worlds())
def test_index_equals_naive_rule(world: tuple[list[Package], list[Spec], dict[str, str]]) -> None:
    packages, specs, device = world
    result = Catalog(packages, specs).resolve(device)
    assert result.key() == resolve_naive(packages, specs, device).key()
    decided = {r.app for r in result.apps} | {p.app for p in result.problems}
    assert len(decided) == len(result.apps) + len(result.problems)  # each app decided once


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_resolved_packages_obey_the_rule(world: tuple[list[Package], list[Spec], dict[str, str]]) -> None:
    """Independent of either implementation: the winner is a candidate and strictly largest."""
    packages, specs, device = world
    for chosen in Catalog(packages, specs).resolve(device).apps:
        asked = {
            a for s in specs if all(device.get(k) == v for k, v in s.target) for a in s.apps if a.name == chosen.app
        }
        assert len(asked) == 1
        app = asked.pop()
        merged = {**device, **dict(app.labels)}
        fits = [p for p in packages if p.name == app.name and all(merged.get(k) == v for k, v in p.labels)]
        assert chosen.package in fits
        assert all(len(p.labels) < len(chosen.package.labels) for p in fits if p != chosen.package)
        assert chosen.start == app.start


def test_scan_fallback_for_labelsets_with_too_many_subsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device with many labels: the index scans instead of enumerating subsets, same answers."""
    rng = random.Random(5)
    keys = [f"k{i}" for i in range(8)]
    packages = {}
    for _ in range(300):
        chosen = {k: rng.choice("ab") for k in rng.sample(keys, rng.randint(0, 3))}
        p = Package(rng.choice(["web", "db"]), labels(chosen), "1", "0" * 64)
        packages[p.id] = p
    specs = [Spec("s", (), (App("web"), App("db", labels({"k0": "a"}))))]
    monkeypatch.setattr(matching, "SUBSET_BUDGET", 0)
    for _ in range(100):
        device = {k: rng.choice("ab") for k in keys}
        expected = resolve_naive(packages.values(), specs, device)
        assert Catalog(packages.values(), specs).resolve(device).key() == expected.key()
