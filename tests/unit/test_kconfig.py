"""builder.formats.kconfig: Debian's real kernel configuration, and IKCONFIG found inside a bzImage.

No kernel built with CONFIG_IKCONFIG is packaged for Debian, so the embedded case uses Debian's
real bzImage with its payload rebuilt by the real compressors: the vmlinux (decompressed by the
real tool for the kernel's CONFIG_KERNEL_* compression: lz4 on Debian 12, zstd on Debian 13) with
an IKCFG_ST…IKCFG_ED block as the kernel's build puts it, recompressed, and the header's
payload_length updated. The payload is found from the boot header, as netbuild does.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest
from support.kconfig import embedded_config
from support.qemu import find_kernel, kernel_release

from builder.formats.kconfig import config_beside, parse_config, payload, read_config_file

pytestmark = pytest.mark.kernel  # Debian's kernel, its modules and kmod's tools

KERNEL = find_kernel()
CONFIG = KERNEL.parent / f"config-{kernel_release(KERNEL)}"
# The real tool that unpacks a kernel payload of each compression (CONFIG_KERNEL_<NAME>).
UNPACK = {"lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dcq"], "gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"]}


def kernel_compression() -> str:
    """How Debian built this kernel's payload, by its configuration (not by netbuild's reader)."""
    chosen = [line.removeprefix("CONFIG_KERNEL_").removesuffix("=y").lower()
              for line in CONFIG.read_text().splitlines()
              if line.startswith("CONFIG_KERNEL_") and line.endswith("=y")
              and line.removeprefix("CONFIG_KERNEL_").removesuffix("=y").lower() in UNPACK]
    assert len(chosen) == 1, f"{CONFIG}: expected one CONFIG_KERNEL_<compression>=y, found {chosen}"
    return chosen[0]


def test_debian_config() -> None:
    config = read_config_file(CONFIG)
    assert config.enabled("CONFIG_RD_ZSTD") and config.enabled("CONFIG_BLK_DEV_INITRD")
    assert not config.enabled("CONFIG_IKCONFIG")  # "# CONFIG_IKCONFIG is not set"
    assert config.options["CONFIG_IKCONFIG"] == "n"
    assert config_beside(KERNEL, kernel_release(KERNEL)) == CONFIG


def test_gzipped_config_and_garbage(tmp_path: Path) -> None:
    packed = tmp_path / "config.gz"
    packed.write_bytes(gzip.compress(CONFIG.read_bytes()))
    assert read_config_file(packed).options == read_config_file(CONFIG).options
    with pytest.raises(ValueError, match="no CONFIG_ lines"):
        parse_config("hello\n", "x")


def test_debian_kernel_has_no_embedded_config() -> None:
    image = KERNEL.read_bytes()
    codec, _ = payload(image)  # type: ignore[misc]
    assert codec == kernel_compression()  # Debian 12's cloud kernel: CONFIG_KERNEL_LZ4; Debian 13's: ZSTD
    assert embedded_config(image, "debian") is None


@pytest.mark.parametrize(("codec", "command"), [
    ("gzip", ["gzip", "-n", "-1"]), ("zstd", ["zstd", "-q", "-1"]), ("lz4", ["lz4", "-l", "-q", "-1"]),
    ("bzip2", ["bzip2", "-1"]),
])
def test_embedded_config_found_in_a_rebuilt_payload(codec: str, command: list[str]) -> None:
    image = KERNEL.read_bytes()
    _, data = payload(image)  # type: ignore[misc]
    # The kernel's build appends the uncompressed size (u32) after the stream, which the tools
    # would read as one more chunk or as trailing garbage; netbuild's reader stops there, they must be told.
    vmlinux = subprocess.run(UNPACK[kernel_compression()], input=data[:-4], capture_output=True, check=True).stdout
    assert vmlinux.startswith(b"\x7fELF") and int.from_bytes(data[-4:], "little") == len(vmlinux)
    text = "# a test configuration\nCONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\nCONFIG_IKCONFIG=y\n"
    blob = b"IKCFG_ST" + gzip.compress(text.encode()) + b"IKCFG_ED"
    middle = 4 << 20  # inside the kernel's data, as the real block is; 6 MiB keeps the test quick
    rebuilt = vmlinux[:middle] + blob + vmlinux[middle : 6 << 20]
    packed = subprocess.run(command, input=rebuilt, capture_output=True, check=True).stdout
    setup = ((image[0x1F1] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", image, 0x248)
    new_image = bytearray(image[: setup + offset] + packed + image[setup + offset + length :])
    struct.pack_into("<I", new_image, 0x24C, len(packed))
    assert payload(bytes(new_image))[0] == codec  # type: ignore[index]
    config = embedded_config(bytes(new_image), "rebuilt")
    assert config is not None and config.source == "rebuilt (embedded IKCONFIG)"
    assert config.options == {"CONFIG_RD_GZIP": "y", "CONFIG_RD_ZSTD": "n", "CONFIG_IKCONFIG": "y"}
