"""Directories a build owns while it runs, and the removal of those whose build was killed.

A build's scratch — OUT's staging copy beside OUT, the cache's temporary files — lives in a
directory it holds an exclusive flock(2) on for as long as it runs. A SIGKILLed build cannot clean
up, but the kernel drops its locks when its last descriptor closes, so the next build can tell an
abandoned directory from a live one by trying the lock: if it gets it, nobody owns the directory.

flock rather than a pid file checked with os.kill(pid, 0): a pid is a number that outlives its
process (recycled, it names a stranger and the directory is never removed) and means nothing in
another pid namespace (a build in a container sharing the cache would look dead, and its live
directory be deleted); a lock belongs to the open file, dies with it, and needs no clock.

The directory is made and locked under a claim name (PREFIX + "new-"), then renamed to its working
name: a cleaner never sees a working directory that is not yet locked. A build killed in between
leaves an empty claim directory, removed once it is older than CLAIM_GRACE_S.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

CLAIM_GRACE_S = 3600.0  # a claim lives for microseconds; one this old was abandoned


class OwnedDir:
    """A directory locked by this process until release() (or its death)."""

    def __init__(self, parent: Path, prefix: str) -> None:
        claim = Path(tempfile.mkdtemp(prefix=f"{prefix}new-", dir=parent))
        self._fd: int | None = os.open(claim, os.O_RDONLY | os.O_DIRECTORY)
        # A filesystem without locks: the directory is never taken for abandoned either (_abandoned).
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = parent / f"{prefix}{claim.name[len(prefix) + 4:]}"
        os.rename(claim, self.path)

    def release(self) -> None:
        """Stop owning it (after it was removed or published as something else)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Remove every directory PREFIX* in parent that no live process owns. Best effort: what cannot
    be removed now is tried again by the next build."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        path = parent / name
        claim = name.startswith(f"{prefix}new-")
        with contextlib.suppress(OSError):
            if claim and time.time() - os.lstat(path).st_mtime < CLAIM_GRACE_S:
                continue
            fd = _abandoned(path)
            if fd is not None:
                try:
                    shutil.rmtree(path)
                finally:
                    os.close(fd)


def _abandoned(path: Path) -> int | None:
    """A descriptor holding the lock of path if nobody else holds it, else None."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live build (EWOULDBLOCK), or no locks here: keep it
        os.close(fd)
        return None
    return fd
