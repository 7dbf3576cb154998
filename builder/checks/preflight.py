"""Preflight: refuse a plan that cannot boot before anything is written, and the initrd it produced
when it is too large for the kernel or the firmware."""

from __future__ import annotations

from builder.errors import NetbuildError
from builder.plan import BootPlan

FIRMWARE_SAFE_INITRD = 2 << 30  # iPXE and many firmwares fail to load an initrd past 2 GiB


def preflight(plan: BootPlan) -> list[str]:
    """Raise NetbuildError for what would not boot; return warnings for what might not."""
    return []


def check_initrd_size(plan: BootPlan, size: int) -> list[str]:
    limit = plan.kernel.header.initrd_addr_max + 1
    if size > limit:
        raise NetbuildError(
            f"the initrd is {size} bytes but {plan.kernel.origin} loads an initrd only below {limit} bytes "
            "(initrd_addr_max); use a stronger --compress or the netboot-squashfs recipe"
        )
    if size > FIRMWARE_SAFE_INITRD:
        return [f"the initrd is {size} bytes: iPXE and many firmwares fail to load an initrd over 2 GiB"]
    return []
