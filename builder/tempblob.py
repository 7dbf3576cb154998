"""A blob written to a temporary file, read back, then kept or thrown away.

The initrd writer packs each group of store paths into one: a cache entry being made (cache.py
keeps it under its key) or, without a cache, a spool file beside the output (removed once the
initrd holds its bytes). The file is closed between packing and reading back, so that thousands
of groups packed ahead of the output hold no descriptors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO


class TempBlob:
    """write to `file`, seal(), open_blob() to read it back; then appended(meta) once its bytes are
    in the initrd, or abort()."""

    def __init__(self, directory: str | Path | None, prefix: str) -> None:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        self.temp = Path(name)
        self.file: BinaryIO | None = os.fdopen(fd, "w+b")  # read back while packing: the member check

    def seal(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def open_blob(self) -> BinaryIO:
        return open(self.temp, "rb")

    def appended(self, meta: dict[str, Any]) -> None:
        """Its bytes are in the initrd now. A spool file has served: it is deleted (a cache entry
        is kept instead: cache.EntryWriter); meta says what the bytes are."""
        self.abort()

    def abort(self) -> None:
        self.seal()
        self.temp.unlink(missing_ok=True)
