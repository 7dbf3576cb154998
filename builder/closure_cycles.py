"""References that go round in a circle between different store paths, which Nix never records.

A path's references are valid before it is registered (Nix refuses to register one whose
references are missing, and refuses a build whose outputs refer to each other: "cycle detected in
the references"), so the only reference that can point back is a path's reference to itself. A
document with A → B → A was not written by Nix; refusing it keeps graph walks honest (roots()
would find no root in such a circle) and says which paths are at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from builder.errors import NetbuildError

_SHOWN = 3  # paths of a long circle named in the message, before "…"


def find_cycle(references: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Some circle of references between different paths, as [A, B, …] meaning A → B → … → A,
    starting at its least path; None if there is none. Paths are visited in sorted order, so the
    answer is the same for the same graph. Iterative: a closure may be a chain of thousands."""
    done: set[str] = set()
    for start in sorted(references):
        if start in done:
            continue
        # The path from start to where the walk is, and for each step what is left to follow.
        trail: list[str] = [start]
        on_trail: dict[str, int] = {start: 0}
        pending = [iter(sorted(references[start]))]
        while pending:
            step = next((r for r in pending[-1] if r != trail[-1] and r not in done), None)
            if step is None:  # all followed: this path is in no circle
                node = trail.pop()
                del on_trail[node]
                done.add(node)
                pending.pop()
                continue
            if step in on_trail:
                cycle = trail[on_trail[step]:]
                first = cycle.index(min(cycle))
                return cycle[first:] + cycle[:first]
            on_trail[step] = len(trail)
            trail.append(step)
            pending.append(iter(sorted(references.get(step, ()))))
    return None


def refuse_cycles(source: str, references: Mapping[str, Iterable[str]]) -> None:
    cycle = find_cycle(references)
    if cycle is None:
        return
    why = ("which Nix never records (a path's references exist before it does: only a path's reference "
           "to itself can point back)")
    if len(cycle) == 2:
        raise NetbuildError(f"{source}: {cycle[0]} and {cycle[1]} reference each other, {why}")
    if len(cycle) <= _SHOWN + 1:
        chain = " → ".join([*cycle, cycle[0]])
    else:
        chain = " → ".join([*cycle[:_SHOWN], "…", cycle[0]]) + f" ({len(cycle)} paths)"
    raise NetbuildError(f"{source}: references go round in a circle: {chain}, {why}")
