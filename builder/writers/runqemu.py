"""`run-qemu`: a bash script in OUT that boots OUT in QEMU without netbuild (like NixOS's run-*-vm).

Rendered from builder/run/run-qemu.sh. It reads kernel-params at run time, so the script and the
parameters cannot disagree; what it carries is the memory this image needs to boot (manifest.json's
memory.bootMiB), its default and the floor below which it warns.
"""

from __future__ import annotations

from pathlib import Path

from builder.arch import X86_64, Arch
from builder.errors import NetbuildError
from builder.outcontract import kernel_artifact
from builder.run.memory import default_memory_mib
from builder.writers.template import substitute

TEMPLATE = Path(__file__).resolve().parent.parent / "run" / "run-qemu.sh"


def run_qemu_script(*, toplevel: str | None, description: str, boot_mib: int, arch: Arch = X86_64) -> bytes:
    """`arch`: the kernel's (builder/arch.py): which QEMU, which machine, which kernel file."""
    try:
        text = TEMPLATE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetbuildError(f"template {TEMPLATE} is missing") from None
    values = {
        "description": description,
        "toplevel": toplevel or "(no toplevel: a closure booted with --kernel and --init)",
        "memory": str(default_memory_mib(boot_mib)),
        "boot_memory": str(boot_mib),
        "qemu": arch.qemu,
        "arch": arch.name,
        "kernel": kernel_artifact(arch.name),
        # Its machine and CPU (none for x86's default PC), one line of the QEMU command above -machine.
        "machine": "".join(f"{option} " for option in arch.qemu_machine),
    }
    return substitute(text, values, template=TEMPLATE.name).encode()
