"""Compare two initrds (or OUT directories) by store path: added, removed, changed, with sizes.

"Changed" pairs a removed and an added path with the same name after the hash (busybox-1.35 →
busybox-1.36 stays two names; /nix/store/aaa…-busybox → /nix/store/bbb…-busybox is one change),
as nvd and `nix store diff-closures` do, when the name is unique on both sides.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from builder.look.sizes import OTHER, Sizes, StorePathSize


@dataclass(frozen=True)
class Change:
    kind: str  # "added", "removed", "changed"
    name: str
    old: StorePathSize | None
    new: StorePathSize | None

    @property
    def delta(self) -> int:
        return (self.new.size if self.new else 0) - (self.old.size if self.old else 0)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "name": self.name,
            "old": None if self.old is None else {"path": self.old.path, "size": self.old.size},
            "new": None if self.new is None else {"path": self.new.path, "size": self.new.size},
            "delta": self.delta,
        }


def diff(a: Sizes, b: Sizes) -> list[Change]:
    old = {p.path: p for p in a.paths if p.path != OTHER}
    new = {p.path: p for p in b.paths if p.path != OTHER}
    removed = [old[p] for p in old if p not in new]
    added = [new[p] for p in new if p not in old]
    by_name_old: dict[str, list[StorePathSize]] = defaultdict(list)
    by_name_new: dict[str, list[StorePathSize]] = defaultdict(list)
    for p in removed:
        by_name_old[p.name].append(p)
    for p in added:
        by_name_new[p.name].append(p)
    changes: list[Change] = []
    for name in sorted(set(by_name_old) | set(by_name_new)):
        olds, news = by_name_old.get(name, []), by_name_new.get(name, [])
        if len(olds) == 1 and len(news) == 1:
            changes.append(Change("changed", name, olds[0], news[0]))
            continue
        changes += [Change("removed", name, p, None) for p in olds]
        changes += [Change("added", name, None, p) for p in news]
    order = {"changed": 0, "added": 1, "removed": 2}
    return sorted(changes, key=lambda c: (order[c.kind], -abs(c.delta), c.name))
