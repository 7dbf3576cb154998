"""How much memory a guest needs to boot an initrd that holds the whole store.

The kernel keeps the compressed initrd in memory while it unpacks it into the initramfs (RAM), so
both count, plus room for the kernel and the system that runs from it. Used for the default of
`netbuild boot --memory` and of `run-qemu`'s QEMU_MEMORY.
"""

from __future__ import annotations

MIB = 1 << 20
MINIMUM_MIB = 512  # below this the Debian cloud kernel and a small userland get tight
HEADROOM_MIB = 384  # kernel, page cache, the booted system's own allocations
STEP_MIB = 128


def recommended_memory_mib(initrd_bytes: int, unpacked_bytes: int) -> int:
    """Guest RAM in MiB for an initrd of `initrd_bytes` that unpacks to `unpacked_bytes`."""
    needed = HEADROOM_MIB + -(-(initrd_bytes + unpacked_bytes) // MIB)
    rounded = -(-needed // STEP_MIB) * STEP_MIB
    return max(MINIMUM_MIB, rounded)
