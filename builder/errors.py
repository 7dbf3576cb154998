"""The one exception type the CLI turns into an `error: …` line.

Everything a user can cause (bad input, a broken closure, a plan that cannot boot) raises
NetbuildError with a message that names the file, field or store path at fault. Anything else
escaping the pipeline is a bug in netbuild and keeps its traceback. An OSError while packing is
either the store's (reported naming the store path) or the output's (is_write_error: reported by
the build as a failure writing OUT).
"""

from __future__ import annotations


class NetbuildError(Exception):
    """A problem with the user's input or environment, reported as one line."""


def is_write_error(e: BaseException) -> bool:
    """An OSError that names no file: met writing (the initrd, a segment file, the pipe to
    mksquashfs) while a store path was being packed, not reading the store, whose errors name the
    file. The build reports it as the output's."""
    return isinstance(e, OSError) and e.filename is None
