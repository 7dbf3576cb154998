"""Which store paths share a cached, separately compressed segment of the initrd.

One segment per store path would make the cache perfect and the initrd 1.5–3% larger (hundreds of
small zstd frames, each starting with an empty window); one segment for everything would recompress
the whole closure for any change. Groups of about `target` bytes keep both: on the benchmark
closure, 2 MiB groups cost 0.6% against one stream (16 MiB: 0.1%, but one unlucky group then held
16 MB and a one-package rebuild recompressed 25 MB instead of 5.5 MB), and a rebuild recompresses
only the groups whose store paths changed.

The boundaries must not move when an unrelated path is added or removed, or one change would
invalidate every group after it. So whether a group ends after a path is decided by that path
alone: paths of `target` bytes or more stand alone, and a smaller path ends its group with a
probability proportional to its size, drawn from a hash of its name (deterministic). Groups then
average `target` bytes, and a change touches only the group(s) holding the changed paths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = 1 << 64


def _ends_group(path: str, size: int, target: int) -> bool:
    draw = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return draw * target < size * _SCALE


def group_paths(sized: Sequence[tuple[str, int]], target: int) -> list[range]:
    """Split (store path, narSize) pairs, in order, into consecutive ranges of indexes."""
    if target <= 0:
        raise ValueError("group target must be positive")
    groups: list[range] = []
    start = 0
    for index, (path, size) in enumerate(sized):
        alone = size >= target
        if alone and index > start:
            groups.append(range(start, index))
            start = index
        if alone or _ends_group(path, size, target):
            groups.append(range(start, index + 1))
            start = index + 1
    if start < len(sized):
        groups.append(range(start, len(sized)))
    return groups
