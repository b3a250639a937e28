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
packages by exact labelset, then name. For a merged labelset, each of its subsets of a size
some package has is looked up once (largest size first), so an app's candidates are a few
lookups by name, whatever the number of packages; a labelset with too many subsets falls
back to scanning the app's packages, largest labelsets first.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations

from dsm_tr181.fleet.model import Labels, Package, Problem, Resolution, Resolved, Spec, is_subset

# (app name, the app's own labels, the merged labels) -> the largest candidates, all of one size
Candidates = Callable[[str, Labels, Mapping[str, str]], list[Package]]
SUBSET_BUDGET = 4096  # beyond this many subset lookups for one labelset, scan the name's packages


def resolve_naive(packages: Iterable[Package], specs: Iterable[Spec], device: Mapping[str, str]) -> Resolution:
    """The rule by full scans: the reference the index is tested and benchmarked against."""
    packages = list(packages)
    applying = [spec for spec in specs if is_subset(spec.target, device)]

    def candidates(name: str, app_labels: Labels, merged: Mapping[str, str]) -> list[Package]:
        found = [p for p in packages if p.name == name and is_subset(p.labels, merged)]
        best = max((len(p.labels) for p in found), default=-1)
        return [p for p in found if len(p.labels) == best]

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
        self._by_labels: dict[Labels, dict[str, Package]] = defaultdict(dict)
        by_size: dict[str, dict[int, list[Package]]] = defaultdict(lambda: defaultdict(list))
        for package in packages:
            self._by_labels[package.labels][package.name] = package
            by_size[package.name][len(package.labels)].append(package)
        self._sizes = sorted({len(labels) for labels in self._by_labels}, reverse=True)
        self._groups: dict[str, list[list[Package]]] = {
            name: [sizes[size] for size in sorted(sizes, reverse=True)] for name, sizes in by_size.items()
        }

    def resolve(self, device: Mapping[str, str]) -> Resolution:
        applying = list(self._unanchored)
        for pair in device.items():
            applying += [spec for spec in self._anchored.get(pair, ()) if is_subset(spec.target, device)]
        tables: dict[Labels, list[list[dict[str, Package]]] | None] = {}  # per merged labelset, this call

        def candidates(name: str, app_labels: Labels, merged: Mapping[str, str]) -> list[Package]:
            if app_labels not in tables:
                tables[app_labels] = self._subset_tables(tuple(sorted(merged.items())))
            table = tables[app_labels]
            if table is None:
                return self._scan(name, merged)
            for same_size in table:
                found = [packages[name] for packages in same_size if name in packages]
                if found:
                    return found
            return []

        return _decide(applying, device, candidates)

    def _subset_tables(self, pairs: Labels) -> list[list[dict[str, Package]]] | None:
        """For each package labelset size (largest first), the packages by name of each subset
        of ``pairs`` of that size that is some package's labelset; None when too many subsets."""
        sizes = [size for size in self._sizes if size <= len(pairs)]
        if sum(math.comb(len(pairs), size) for size in sizes) > SUBSET_BUDGET:
            return None
        tables = []
        for size in sizes:
            same_size = [found for subset in combinations(pairs, size) if (found := self._by_labels.get(subset))]
            if same_size:
                tables.append(same_size)
        return tables

    def _scan(self, name: str, merged: Mapping[str, str]) -> list[Package]:
        for group in self._groups.get(name, ()):
            found = [p for p in group if is_subset(p.labels, merged)]
            if found:
                return found
        return []


def _decide(applying: Sequence[Spec], device: Mapping[str, str], candidates: Candidates) -> Resolution:
    wanted: dict[str, dict[tuple[Labels, bool], list[str]]] = {}
    for spec in applying:
        for app in spec.apps:
            wanted.setdefault(app.name, {}).setdefault((app.labels, app.start), []).append(spec.id)
    result = Resolution()
    for name in sorted(wanted):
        variants = wanted[name]
        if len(variants) > 1:
            result.problems.append(Problem(name, "conflict", _conflict_message(name, variants)))
            continue
        (app_labels, start), spec_ids = next(iter(variants.items()))
        merged = {**device, **dict(app_labels)} if app_labels else device
        top = candidates(name, app_labels, merged)
        if not top:
            message = f"app {name}: no package {name} has a labelset within {_text(merged)}"
            result.problems.append(Problem(name, "nomatch", message))
        elif len(top) > 1:
            ids = ", ".join(f"{p.id} ({_text(dict(p.labels))})" for p in sorted(top, key=lambda p: p.id))
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
