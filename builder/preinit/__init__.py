"""netbuild's /init for the whole-store layout: a program that runs before the system's init and
gives it a root where pivot_root(2) works, so the Nix sandbox and containers work on the booted
machine (x86_64.S says how, instruction by instruction).

Why a program of netbuild's own, and why machine code: it must run before anything of the closure
(whose init may be any program, in any language) and without anything the closure may lack (a
shell, a libc), on every architecture netbuild packs for, on a machine that has neither an assembler
nor a C compiler. So it is a static ELF of a few hundred bytes, written here from the bytes GNU as
makes of x86_64.S and aarch64.S (tests/unit/test_preinit.py assembles each source and compares),
plus an ELF header and the default init's path.
"""

from __future__ import annotations

import struct

# `as --64 x86_64.S; objcopy -O binary -j .text`: everything up to the label default_init.
_CODE_X86_64 = bytes.fromhex(
    "4989e44881ec001000004c8d2d44020000488d3df0010000488d35ee0100004889fa4531d24531c0b8a50000000f0585"
    "c00f85b4000000488d3dd501000031f6b8020000000f0585c00f888c0000004189c789c74889e6baff0f000031c00f05"
    "4989c64489ffb8030000000f054d85f67e6942c604340031c94c39f1735d4885c90f84000000000fb6440cff3c200f84"
    "0000000084c0753e813c0c696e69747535807c0c043d752e488d51050fb6041484c0740d3c2074093c0a740548ffc2eb"
    "ebc6041400488d41054839c274054c8d6c0c054889d148ffc1eb9e488d3d2b01000031f6b8a60000000f05488d3d2f01"
    "0000488d352a01000031d241ba001000004531c0b8a50000000f0585c0754a488d3d0d010000b8500000000f05488d3d"
    "04010000488d35f600000031d241ba002000004531c0b8a50000000f05488d3de4000000b8a10000000f05488d3dcf00"
    "0000b8500000000f054d896c24084c89ef498d742408498b0c24498d54cc10b83b0000000f054989c6488d35aa000000"
    "ba22000000e8710000004c89ee31d2803c16007404ffc2ebf6e85d000000488d35a7000000ba09000000e84c0000004c"
    "89f048f7d8488db424ff0f0000c6060ac646ff294883ee01b90a00000031d248f7f180c23048ffce88164885c075ee48"
    "8d9424001000004829f2e80c000000bf01000000b83c0000000f05bf02000000b8010000000f05c370726f63002f7072"
    "6f63002f70726f632f636d646c696e65002f002f72756e002e006e65746275696c64202f696e69743a206661696c6564"
    "20746f20657865637574652020286572726f72202d"
)

# `aarch64-linux-gnu-as aarch64.S; objcopy -O binary -j .text`: likewise.
_CODE_AARCH64 = bytes.fromhex(
    "f3030091ff0740d1f6030091941300300011001001110030e20300aa030080d2040080d2080580d2010000d440070035"
    "600c809221100070020080d2080780d2010000d40006f837f703002ae10316aae2ff81d2e80780d2010000d4f50300aa"
    "e003172a280780d2010000d4bf0200f1ad040054df6a3538090080d23f0115eb22040054c90000b42a0500d1cb6a6a38"
    "7f810071400000542b030035ca02098b4b0140b92ccd8d522c8dae727f010c6b610200544b1140397ff5007101020054"
    "2d150091cb6a6d38eb0000347f810071a00000547f29007160000054ad050091f9ffff17df6a2d382a150091bf010aeb"
    "40000054d4020a8be9030daa29050091dfffff1780090030010080d2e80480d2010000d4a009003081090070020080d2"
    "030082d2040080d2080580d2010000d420020035a0080070280680d2010000d48008001021080030020080d2030084d2"
    "040080d2080580d2010000d4a0070010680680d2010000d400070030280680d2010000d4740600f9e00314aa61220091"
    "690240f9620e098b42400091a81b80d2010000d4f70300aac1050050420480d220000094e10314aa020080d22b686238"
    "6b00003442040091fdffff1719000094a1050010220180d216000094e00317cbc1fe3f914b0180522b0000392b058052"
    "2bf01f38210400d14c0180d20d08cc9aae810c9bcec10011210400d12e000039e0030daa40ffffb5c2064091420001cb"
    "04000094200080d2a80b80d2010000d4400080d2080880d2010000d4c0035fd670726f63002f70726f63002f70726f63"
    "2f636d646c696e65002f002f72756e002e006e65746275696c64202f696e69743a206661696c656420746f2065786563"
    "7574652020286572726f72202d"
)

_LOAD_ADDRESS = 0x400000  # any page-aligned address above mmap_min_addr; the code is position independent
_ELF_HEADER_SIZE = 64
_PROGRAM_HEADER_SIZE = 56
_EM_X86_64 = 62
_EM_AARCH64 = 183
_PT_LOAD = 1
_PF_R, _PF_X = 4, 1
# builder/arch.py's name: (e_machine, code)
CODE: dict[str, tuple[int, bytes]] = {"x86_64": (_EM_X86_64, _CODE_X86_64), "aarch64": (_EM_AARCH64, _CODE_AARCH64)}


def preinit_program(default_init: str, arch: str = "x86_64") -> bytes:
    """The static ELF executable: it runs `init=` from the kernel command line (or `default_init`
    when there is none) on a root that is a bind mount of the initramfs."""
    machine, code = CODE[arch]
    if "\0" in default_init:
        raise ValueError("an init path has no NUL byte")
    body = code + default_init.encode() + b"\0"
    entry = _LOAD_ADDRESS + _ELF_HEADER_SIZE + _PROGRAM_HEADER_SIZE
    size = _ELF_HEADER_SIZE + _PROGRAM_HEADER_SIZE + len(body)
    header = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0,  # 64-bit, little-endian, version 1, System V ABI
        2, machine, 1,  # ET_EXEC
        entry, _ELF_HEADER_SIZE, 0,  # e_entry, e_phoff, e_shoff (no section headers: nothing needs them)
        0, _ELF_HEADER_SIZE, _PROGRAM_HEADER_SIZE, 1, 64, 0, 0,
    )
    # One read-only, executable segment: the whole file. The program writes only to its stack.
    segment = struct.pack("<IIQQQQQQ", _PT_LOAD, _PF_R | _PF_X, 0, _LOAD_ADDRESS, _LOAD_ADDRESS, size, size, 0x1000)
    return header + segment + body
