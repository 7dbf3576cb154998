"""The one exception type the CLI turns into an `error: …` line.

Everything a user can cause (bad input, a broken closure, a plan that cannot boot) raises
NetbuildError with a message that names the file, field or store path at fault. Anything else
escaping the pipeline is a bug in netbuild and keeps its traceback.
"""

from __future__ import annotations


class NetbuildError(Exception):
    """A problem with the user's input or environment, reported as one line."""
