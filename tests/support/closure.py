"""Questions the tests ask of a builder.closure.Closure that netbuild itself never asks."""

from __future__ import annotations

from builder.closure import Closure


def paths(closure: Closure) -> list[str]:
    """Its store paths, in path order (the order it iterates in)."""
    return [sp.path for sp in closure]


def requisites(closure: Closure, root: str) -> set[str]:
    """Everything reachable from root, root included."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(closure[p].references)
    return seen
