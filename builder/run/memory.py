"""How much memory a machine needs to boot an image, stated before it boots.

While the kernel unpacks the initrd, three things share the RAM:
- the kernel itself: `init_size` from its boot header (what it needs from its load address while it
  starts) plus what it reserves besides (memory map, per-CPU areas, early tables);
- the initrd as loaded, kept until it is unpacked, then freed;
- the files unpacked into the initial root file system. That is a tmpfs (the kernel's choice when
  there is no root=), and a tmpfs may hold at most half of the RAM the kernel counts — counted at
  boot, while the initrd is still reserved. So the files need twice their own size in free RAM,
  each file rounded up to whole 4 KiB pages, as tmpfs stores it.

The constants are measured, with Debian 12's cloud kernel (6.1, init_size 51.5 MiB) in QEMU (TCG,
`-kernel/-initrd`, SeaBIOS), by halving the memory until the boot failed (precision 8 MiB):

    image                                      initrd   unpacked   boots from   model
    pivot probe, whole store                     1.0 MiB    1.9 MiB     77 MiB     78 MiB
    + /usr/lib/chromium (349 MiB), whole store 124.3      349.4        887        895
    the same, squashfs layout (zstd:3)         143.0      144.3        488        504

The model (kernel + initrd + 2 × files) is the threshold within 3 %; the statement adds MARGIN on
top, for firmware and loaders (OVMF, iPXE) that keep some memory of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
PAGE = 4096
KERNEL_RESERVED_MIB = 20  # beyond init_size: measured as 77 MiB − 51.5 − 1.0 − 2 × 1.9, rounded up
DEFAULT_INIT_SIZE_MIB = 64  # a kernel whose header does not say (boot protocol < 2.10)
MARGIN = 1.10
STEP_MIB = 16
FLOOR_MIB = 128  # firmware alone wants this much, whatever the image
MINIMUM_MIB = 512  # the default of run-qemu and `netbuild boot`: room for the booted system itself


def pages(size: int) -> int:
    """Bytes a file of `size` bytes occupies in a tmpfs: whole pages."""
    return -(-size // PAGE) * PAGE


def boot_memory_mib(*, kernel_init_size: int, initrd_bytes: int, rootfs_bytes: int) -> int:
    """The RAM in MiB an image needs to boot: a kernel whose boot header says `kernel_init_size`
    (0: unknown), an initrd of `initrd_bytes`, unpacking `rootfs_bytes` of tmpfs pages."""
    kernel = kernel_init_size or DEFAULT_INIT_SIZE_MIB * MIB
    needed = kernel + KERNEL_RESERVED_MIB * MIB + initrd_bytes + 2 * rootfs_bytes
    stated = -(-int(needed * MARGIN) // (STEP_MIB * MIB)) * STEP_MIB
    return max(FLOOR_MIB, stated)


def default_memory_mib(boot_mib: int) -> int:
    """What run-qemu and `netbuild boot` give a guest unless told: what the image needs to boot,
    and at least MINIMUM_MIB for the system that runs afterwards."""
    return max(MINIMUM_MIB, boot_mib)


@dataclass(frozen=True)
class BootMemory:
    """The figures an image's boot memory is stated from, as manifest.json records them."""

    kernel_init_size: int
    initrd_bytes: int
    rootfs_bytes: int

    @property
    def boot_mib(self) -> int:
        return boot_memory_mib(kernel_init_size=self.kernel_init_size, initrd_bytes=self.initrd_bytes,
                               rootfs_bytes=self.rootfs_bytes)

    def to_json(self) -> dict[str, object]:
        return {
            "bootMiB": self.boot_mib,
            "kernelInitSize": self.kernel_init_size,
            "initrdBytes": self.initrd_bytes,
            "rootfsBytes": self.rootfs_bytes,
            "rule": f"(kernel init_size + {KERNEL_RESERVED_MIB} MiB + initrd + 2 × rootfs) × {MARGIN:.2f}, "
                    f"in steps of {STEP_MIB} MiB, at least {FLOOR_MIB} MiB",
        }
