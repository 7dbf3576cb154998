"""Preflight for the VM layouts (vm-9p, vm-disk): can this kernel mount the store the layout brings?

The layout's kernel options (builder/stage1/needs.py) must each be set, built in or as a module; one
that is not set at all means the stage 1 could not mount the store on any machine, and the build
is refused naming every such option. Debian's cloud kernel is the common case: it is built without
9p (`# CONFIG_NET_9P is not set`), which vm-9p cannot do without; Debian's generic kernel
(linux-image-amd64) has it. With no configuration to read (no --kernel-config, none beside the kernel,
no IKCONFIG) the check is silent and the stage 1 says at boot, in one line, what is missing.
"""

from __future__ import annotations

from builder.formats.kconfig import KernelConfig
from builder.plan import BootPlan
from builder.stage1.needs import NEEDS


def vm_kernel_problem(plan: BootPlan, config: KernelConfig | None) -> str | None:
    """What makes the kernel unable to boot the plan's layout (the kernel options its stage 1 needs,
    stage1/needs.py: the VM layouts'), or None."""
    needs = NEEDS.get(plan.recipe.layout)
    if config is None or needs is None:
        return None
    unset = [(option, why) for option, why in needs.options if not config.enabled(option)]
    if not unset:
        return None
    options = ", ".join(f"{option} ({why})" for option, why in unset)
    verb = "is" if len(unset) == 1 else "are"
    hint = (" (Debian's cloud kernel has no 9p: use its generic one, linux-image-amd64, or the vm-disk layout)"
            if any(option.startswith(("CONFIG_NET_9P", "CONFIG_9P")) for option, _ in unset) else "")
    return (f"{plan.kernel.origin} cannot mount the {plan.recipe.layout} layout's store: {options} {verb} not set "
            f"in {config.source}{hint}")
