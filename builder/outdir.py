"""Atomic output: build in a staging directory beside OUT, then swap it into place in one step.

A failed or interrupted build removes its staging directory and leaves OUT exactly as it was. A
killed one cannot: its staging directory is one it owns (builder/owned.py), and the next build
beside OUT removes those whose build is gone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
from pathlib import Path

from builder.errors import NetbuildError
from builder.outcontract import MANIFEST, ManifestError, read_manifest
from builder.owned import OwnedDir, remove_abandoned

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_owned: dict[Path, OwnedDir] = {}  # staging and old copies this process made, until removed or published


def check_replaceable(out: Path) -> None:
    """Refuse to replace anything that netbuild did not make: OUT is swapped out whole."""
    absolute = Path(os.path.abspath(out))
    if absolute == Path(absolute.anchor) or Path.cwd().is_relative_to(absolute):
        raise NetbuildError(f"output {out} is the current directory or one of its parents; name a subdirectory")
    if not os.path.lexists(out):
        return
    if out.is_symlink():
        raise NetbuildError(f"output {out} is a symlink; pass the directory it points to ({os.path.realpath(out)})")
    if not out.is_dir():
        raise NetbuildError(f"output {out} exists and is not a directory")
    try:
        entries = list(out.iterdir())
    except OSError as e:
        raise NetbuildError(f"output {out}: cannot list: {e.strerror}") from None
    if not entries:
        return
    try:
        read_manifest(out)  # only its header: whatever netbuild version wrote it, it is netbuild's
    except ManifestError:
        raise NetbuildError(
            f"output {out} exists and was not made by netbuild (no netbuild {MANIFEST}); "
            "choose an empty or new directory"
        ) from None


def _prefixes(out: Path) -> tuple[str, str]:
    return f".{out.name}.tmp-", f".{out.name}.old-"


def _own(parent: Path, prefix: str) -> Path:
    owned = OwnedDir(parent, prefix)
    _owned[owned.path] = owned
    return owned.path


def _release(path: Path) -> None:
    owned = _owned.pop(path, None)
    if owned is not None:
        owned.release()


def make_staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for prefix in _prefixes(out):
            remove_abandoned(out.parent, prefix)  # left by builds that were killed
        staging = _own(out.parent, _prefixes(out)[0])
    except FileExistsError:  # mkdir met a file where a parent directory should be
        raise NetbuildError(f"output {out}: a parent of it is a file, not a directory") from None
    except OSError as e:
        raise NetbuildError(f"output {out}: cannot create a directory beside it: {e.strerror}") from None
    staging.chmod(0o755)  # mkdtemp makes 0700; OUT is served to others (HTTP/TFTP)
    return staging


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    _release(staging)


def publish(staging: Path, out: Path) -> None:
    """Move staging to out; if out exists, exchange the two atomically and delete the old one.

    SIGINT and SIGTERM wait until the swap and the clean-up are done: an interrupt in between
    could otherwise leave no OUT at all, or a stray copy beside it.
    """
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        _swap(staging, out)
    finally:
        _release(staging)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _swap(staging: Path, out: Path) -> None:
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        discard(staging)  # now holds the previous OUT
        return
    # No renameat2 (old kernel or libc): two renames leave a moment without OUT, never a mix.
    old = _own(out.parent, _prefixes(out)[1])
    os.rename(out, old / "out")
    os.rename(staging, out)
    discard(old)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
