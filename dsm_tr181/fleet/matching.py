"""JamesD's rule: which package each device runs.

1. The specs whose ``target`` labelset is a subset of the device's labels apply.
2. Each app of those specs is decided on its own: the device's labels merged with the
   app's labels (the app's value wins on a shared name) form the app's set; the packages of
   that name whose labelset is a subset of it are candidates, and the most specific (the
   largest labelset) wins.
3. Never a guess: several candidates of the same largest size are a ``tie``; two applying
   specs asking for the same app name with different labels (or run intents) are a
   ``conflict`` naming both specs; no candidate is ``nomatch``. Each is a :class:`Problem`
   for that app only, and the other apps are still decided.

:func:`resolve_naive` is the rule read literally (every spec, every package);
:class:`Catalog` gives the same answers from an index: specs are filed under one label of
their target (the anchor; a device can only match specs anchored on one of its own labels);
packages by name and exact labelset, in groups of equal labelset size. An app's candidates of
size k are found by looking up each k-label subset of its merged set (or by scanning the
group when that is smaller), largest k first, stopping at the first size that has one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations

from dsm_tr181.fleet.model import App, Labels, Package, Problem, Resolution, Resolved, Spec, is_subset

Candidates = Callable[[App, Mapping[str, str]], list[Package]]


def resolve_naive(packages: Iterable[Package], specs: Iterable[Spec], device: Mapping[str, str]) -> Resolution:
    """The rule by full scans: the reference the index is tested and benchmarked against."""
    packages = list(packages)
    applying = [spec for spec in specs if is_subset(spec.target, device)]

    def candidates(app: App, merged: Mapping[str, str]) -> list[Package]:
        return [p for p in packages if p.name == app.name and is_subset(p.labels, merged)]

    return _decide(applying, device, candidates)


class Catalog:
    """An immutable index of packages and specs; build a new one after a change."""

    def __init__(self, packages: Iterable[Package], specs: Iterable[Spec]) -> None:
        self._unanchored: list[Spec] = []
        self._anchored: dict[tuple[str, str], list[Spec]] = defaultdict(list)
        for spec in specs:
            if spec.target:
                self._anchored[spec.target[0]].append(spec)
            else:
                self._unanchored.append(spec)
        by_size: dict[str, dict[int, list[Package]]] = defaultdict(lambda: defaultdict(list))
        self._exact: dict[tuple[str, Labels], Package] = {}
        for package in packages:
            by_size[package.name][len(package.labels)].append(package)
            self._exact[(package.name, package.labels)] = package
        self._packages: dict[str, list[tuple[int, list[Package]]]] = {
            name: [(size, sizes[size]) for size in sorted(sizes, reverse=True)] for name, sizes in by_size.items()
        }

    def resolve(self, device: Mapping[str, str]) -> Resolution:
        applying = list(self._unanchored)
        for pair in device.items():
            applying += [spec for spec in self._anchored.get(pair, ()) if is_subset(spec.target, device)]
        return _decide(applying, device, self._candidates)

    def _candidates(self, app: App, merged: Mapping[str, str]) -> list[Package]:
        pairs = tuple(sorted(merged.items()))
        for size, group in self._packages.get(app.name, ()):
            if size > len(pairs):
                continue
            if math.comb(len(pairs), size) < len(group):
                found = [p for c in combinations(pairs, size) if (p := self._exact.get((app.name, c))) is not None]
            else:
                found = [p for p in group if is_subset(p.labels, merged)]
            if found:
                return found
        return []


def _decide(applying: Sequence[Spec], device: Mapping[str, str], candidates: Candidates) -> Resolution:
    wanted: dict[str, dict[tuple[Labels, bool], list[str]]] = defaultdict(lambda: defaultdict(list))
    for spec in applying:
        for app in spec.apps:
            wanted[app.name][(app.labels, app.start)].append(spec.id)
    result = Resolution()
    for name in sorted(wanted):
        variants = wanted[name]
        if len(variants) > 1:
            result.problems.append(Problem(name, "conflict", _conflict_message(name, variants)))
            continue
        (app_labels, start), spec_ids = next(iter(variants.items()))
        merged = {**device, **dict(app_labels)}
        found = candidates(App(name, app_labels, start), merged)
        best = max((len(p.labels) for p in found), default=-1)
        top = sorted((p for p in found if len(p.labels) == best), key=lambda p: p.id)
        if not top:
            message = f"app {name}: no package {name} has a labelset within {_text(merged)}"
            result.problems.append(Problem(name, "nomatch", message))
        elif len(top) > 1:
            ids = ", ".join(f"{p.id} ({_text(dict(p.labels))})" for p in top)
            message = f"app {name}: tie between equally specific packages {ids} for {_text(merged)}"
            result.problems.append(Problem(name, "tie", message))
        else:
            result.apps.append(Resolved(name, top[0], start, tuple(sorted(spec_ids))))
    return result


def _conflict_message(name: str, variants: Mapping[tuple[Labels, bool], list[str]]) -> str:
    asks = "; ".join(
        f"spec {', '.join(sorted(ids))} asks for labels {{{_text(dict(app_labels))}}} start={str(start).lower()}"
        for (app_labels, start), ids in sorted(variants.items(), key=lambda item: sorted(item[1]))
    )
    return f"app {name}: conflicting specs: {asks}"


def _text(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))
