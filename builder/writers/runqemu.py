"""`run-qemu`: a bash script in OUT that boots OUT in QEMU without netbuild (like NixOS's run-*-vm).

Rendered from builder/run/run-qemu.sh. It reads kernel-params at run time, so the script and the
parameters cannot disagree; what it carries is the memory this image needs to boot (manifest.json's
memory.bootMiB), its default and the floor below which it warns. For the VM layouts it also attaches
the store (builder/run/vmstore.py), and takes NIX_DISK_IMAGE and NETBUILD_SHARES from its
environment (builder/run/run-qemu-vm.sh, rendered into it).
"""

from __future__ import annotations

from pathlib import Path

from builder.arch import X86_64, Arch
from builder.errors import NetbuildError
from builder.outcontract import kernel_artifact
from builder.run.memory import default_memory_mib
from builder.run.vmstore import ROOT_SERIAL, store_qemu_args
from builder.writers.template import substitute

TEMPLATE = Path(__file__).resolve().parent.parent / "run" / "run-qemu.sh"
VM_TEMPLATE = TEMPLATE.with_name("run-qemu-vm.sh")
_STORE_WHAT = {"vm-9p": "this machine's /nix/store, shared read-only over 9p (the closure must be in it)",
               "vm-disk": "store.img beside this script, a read-only virtio disk"}


def _read(template: Path) -> str:
    try:
        return template.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetbuildError(f"template {template} is missing") from None


def _bash_word(arg: str) -> str:
    """arg in double quotes, leaving the ${here…} expansion it may hold to bash."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def _vm_store(layout: str) -> str:
    """The lines that attach the layout's store, disk and shares; none for the other layouts."""
    if layout not in _STORE_WHAT:
        return "# (none: this layout's store is in the initrd)"
    # OUT's directory as a QEMU option value: bash doubles its commas when the script runs.
    args = store_qemu_args(layout, "${here//,/,,}")
    values = {"layout": layout, "store_what": _STORE_WHAT[layout], "root_serial": ROOT_SERIAL,
              "store_args": " ".join(_bash_word(a) for a in args)}
    return substitute(_read(VM_TEMPLATE), values, template=VM_TEMPLATE.name).rstrip("\n")


def run_qemu_script(*, toplevel: str | None, description: str, boot_mib: int, arch: Arch = X86_64,
                    layout: str = "initramfs") -> bytes:
    """`arch`: the kernel's (builder/arch.py): which QEMU, which machine, which kernel file. `layout`:
    the recipe's, for the VM layouts' store."""
    text = _read(TEMPLATE)
    values = {
        "description": description,
        "toplevel": toplevel or "(no toplevel: a closure booted with --kernel and --init)",
        "memory": str(default_memory_mib(boot_mib)),
        "boot_memory": str(boot_mib),
        "vm_store": _vm_store(layout),
        "qemu": arch.qemu,
        "arch": arch.name,
        "kernel": kernel_artifact(arch.name),
        # Its machine and CPU (none for x86's default PC), one line of the QEMU command above -machine.
        "machine": "".join(f"{option} " for option in arch.qemu_machine),
    }
    return substitute(text, values, template=TEMPLATE.name).encode()
