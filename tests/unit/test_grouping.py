"""Grouping store paths into cached segments: boundaries that a change does not move."""

from __future__ import annotations

import random

import pytest

from builder.writers.grouping import group_paths

TARGET = 1000


def _closure(rng: random.Random, count: int) -> list[tuple[str, int]]:
    names = {f"/nix/store/{rng.getrandbits(128):032x}-p{i}" for i in range(count)}
    return sorted((name, rng.choice([10, 50, 200, 900, 3000])) for name in names)


def _as_sets(sized: list[tuple[str, int]], groups: list[range]) -> set[tuple[str, ...]]:
    return {tuple(sized[i][0] for i in group) for group in groups}


def test_groups_cover_every_path_once_in_order() -> None:
    sized = _closure(random.Random(1), 300)
    groups = group_paths(sized, TARGET)
    assert [i for group in groups for i in group] == list(range(len(sized)))
    assert all(len(group) for group in groups)


def test_a_path_of_target_size_or_more_stands_alone() -> None:
    sized = _closure(random.Random(2), 300)
    for group in group_paths(sized, TARGET):
        sizes = [sized[i][1] for i in group]
        assert len(sizes) == 1 or max(sizes) < TARGET


def test_groups_average_the_target() -> None:
    sized = [(name, 10) for name, _ in _closure(random.Random(3), 5000)]
    groups = group_paths(sized, TARGET)
    average = sum(10 * len(g) for g in groups) / len(groups)
    assert TARGET * 0.7 < average < TARGET * 1.3


@pytest.mark.parametrize("seed", range(40))
def test_adding_or_removing_one_path_rewrites_only_its_neighbourhood(seed: int) -> None:
    rng = random.Random(seed)
    sized = _closure(rng, 400)
    before = _as_sets(sized, group_paths(sized, TARGET))
    # Removing a small path rewrites its group, merged with the next one if the path ended it.
    # A large path stands alone, so removing it also merges the groups on either side of it.
    victim = rng.randrange(len(sized))
    removed = sized[:victim] + sized[victim + 1 :]
    after = _as_sets(removed, group_paths(removed, TARGET))
    allowed = 3 if sized[victim][1] >= TARGET else 2
    assert len(before - after) <= allowed and len(after - before) <= 1
    # Adding is the mirror image.
    newcomer = (f"/nix/store/{rng.getrandbits(128):032x}-new", rng.choice([10, 200, 3000]))
    added = sorted([*sized, newcomer])
    after = _as_sets(added, group_paths(added, TARGET))
    allowed = 3 if newcomer[1] >= TARGET else 2
    assert len(before - after) <= 1 and len(after - before) <= allowed


def test_the_same_input_gives_the_same_groups() -> None:
    sized = _closure(random.Random(4), 200)
    assert group_paths(sized, TARGET) == group_paths(list(sized), TARGET)
