"""The repository's objects: packages, specs and what a device is told to run.

A labelset is a mapping of label names to values; "A is a subset of B" means every
``name=value`` of A is in B. Labelsets are kept as sorted tuples of pairs so that they
hash and compare by content.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9._/:+-]{0,128}$")
APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FleetError(ValueError):
    """Bad input to the repository (names, labels, specs); the message says what."""


def labels(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Labels:
    """A checked, canonical labelset from a mapping or pairs."""
    pairs = list(value.items()) if isinstance(value, Mapping) else list(value or ())
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise FleetError(f"a label name appears twice in {pairs!r}")
    for name, text in pairs:
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise FleetError(f"bad label name {name!r}")
        if not isinstance(text, str) or not LABEL_VALUE.match(text):
            raise FleetError(f"bad value {text!r} for label {name}")
    return tuple(sorted(pairs))


def parse_labels(text: str) -> Labels:
    """``k=v,k2=v2`` (the CLI's and the daemon configuration's form); "" is no labels."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise FleetError(f"label {item!r} is not name=value")
        pairs.append((name.strip(), value.strip()))
    return labels(pairs)


def labels_text(value: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in value)


def is_subset(small: Labels, big: Mapping[str, str]) -> bool:
    return all(big.get(name) == value for name, value in small)


def check_name(name: object, what: str = "app") -> str:
    if not isinstance(name, str) or not APP_NAME.match(name):
        raise FleetError(f"bad {what} name {name!r} (letters, digits, '.', '_', '-'; at most 64)")
    return name


def package_id(name: str, package_labels: Labels) -> str:
    """Stable id of a package: name and labelset identify it (no two packages share both)."""
    digest = hashlib.sha256(f"{name}\n{labels_text(package_labels)}".encode()).hexdigest()
    return f"{name}-{digest[:12]}"


@dataclass(frozen=True)
class Package:
    name: str
    labels: Labels
    version: str
    sha256: str  # hex digest of the DU archive
    url: str = ""  # where the archive lives; "" = served by the repository (content-addressed blob)
    size: int = 0

    @functools.cached_property
    def id(self) -> str:
        return package_id(self.name, self.labels)


@dataclass(frozen=True)
class App:
    name: str
    labels: Labels = ()
    start: bool = True  # run intent: the EU is started (Active) or left Idle


@dataclass(frozen=True)
class Spec:
    id: str
    target: Labels
    apps: tuple[App, ...]


def spec_from_json(data: object) -> Spec:
    """A spec from its JSON/YAML form ``{id, target: {..}, apps: [{name, labels, start}]}``."""
    if not isinstance(data, Mapping):
        raise FleetError("a spec is an object with id, target and apps")
    unknown = set(data) - {"id", "target", "apps"}
    if unknown:
        raise FleetError(f"spec: unknown key(s) {', '.join(sorted(unknown))}")
    spec_id = check_name(data.get("id"), "spec")
    apps_raw = data.get("apps", [])
    if not isinstance(apps_raw, list):
        raise FleetError(f"spec {spec_id}: apps must be a list")
    apps: list[App] = []
    for entry in apps_raw:
        if not isinstance(entry, Mapping) or set(entry) - {"name", "labels", "start"}:
            raise FleetError(f"spec {spec_id}: an app is {{name, labels, start}}, not {entry!r}")
        start = entry.get("start", True)
        if not isinstance(start, bool):
            raise FleetError(f"spec {spec_id}: start must be true or false")
        apps.append(App(check_name(entry.get("name")), labels(_mapping(entry.get("labels"), spec_id)), start))
    names = [app.name for app in apps]
    if len(set(names)) != len(names):
        raise FleetError(f"spec {spec_id}: an app name appears twice")
    return Spec(spec_id, labels(_mapping(data.get("target"), spec_id)), tuple(apps))


def _mapping(value: object, spec_id: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FleetError(f"spec {spec_id}: labels must be an object of name: value")
    return value


def spec_json(spec: Spec) -> dict[str, object]:
    return {
        "id": spec.id,
        "target": dict(spec.target),
        "apps": [{"name": a.name, "labels": dict(a.labels), "start": a.start} for a in spec.apps],
    }


def package_json(package: Package) -> dict[str, object]:
    return {
        "id": package.id,
        "name": package.name,
        "labels": dict(package.labels),
        "version": package.version,
        "sha256": package.sha256,
        "url": package.url,
        "size": package.size,
    }


@dataclass(frozen=True)
class Resolved:
    """One app a device must run: the package chosen and the run intent."""

    app: str
    package: Package
    start: bool
    specs: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """An app that cannot be decided: ``tie``, ``conflict`` or ``nomatch``. On a tie or a
    conflict the device leaves what it has for that app as it is; with no package at all it
    removes the app. Either way it is an error in ``dsm-fleet devices`` and on the device."""

    app: str
    kind: str
    message: str


@dataclass
class Resolution:
    apps: list[Resolved] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def key(self) -> tuple[object, ...]:
        """Comparable form (order-free) for tests and ETags."""
        return (
            sorted((r.app, r.package.id, r.package.sha256, r.start, r.specs) for r in self.apps),
            sorted((p.app, p.kind, p.message) for p in self.problems),
        )
