"""Atomic output: build in a staging directory beside OUT, then swap it into place in one step.

A failed or interrupted build removes its staging directory and leaves OUT exactly as it was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path

from builder.errors import NetbuildError
from builder.outcontract import MANIFEST, ManifestError, read_manifest

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


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


def make_staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except FileExistsError:  # mkdir met a file where a parent directory should be
        raise NetbuildError(f"output {out}: a parent of it is a file, not a directory") from None
    except OSError as e:
        raise NetbuildError(f"output {out}: cannot create a directory beside it: {e.strerror}") from None
    staging.chmod(0o755)  # mkdtemp makes 0700; OUT is served to others (HTTP/TFTP)
    return staging


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


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
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _swap(staging: Path, out: Path) -> None:
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        discard(staging)  # now holds the previous OUT
        return
    # No renameat2 (old kernel or libc): two renames leave a moment without OUT, never a mix.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
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
