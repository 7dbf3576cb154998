"""Keep large buffers out of the long-lived heap, so peak memory is what is in use, not what was.

The initrd writer allocates and frees a 16 MiB member buffer per member. glibc serves blocks that
large with mmap — until one is freed, when its "dynamic mmap threshold" rises above them and later
ones come from the heap, where freed space is fragmented and seldom returned: resident memory
then grows well past the live data. Fixing the threshold (which disables the adjustment) keeps
every large buffer an mmap that is returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_THRESHOLD = 1 << 20


def use_mmap_for_large_buffers() -> bool:
    """True if the C library took the setting (glibc); elsewhere a harmless no-op."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
