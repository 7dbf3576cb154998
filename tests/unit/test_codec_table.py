"""builder.formats.compress as the codec table: every codec the kernel knows, each against its real
tool (magic, where a member ends, its plain bytes), its CONFIG_RD_* option against Debian's kernel
configuration, the codecs netbuild writes decoded back by those tools, the one zstd threading
policy, and no other module of builder/ knowing a codec's settings."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from support.qemu import find_kernel, kernel_release

from builder.formats.compress import CODECS, NONE, WRITTEN, ZSTD, Compression, detect, parse_compression
from builder.formats.streams import ByteRange, CompressionError, compress_member, open_compressor

BUILDER = Path(__file__).resolve().parents[2] / "builder"
rng = random.Random(5)
PLAIN = b"".join([rng.randbytes(50_000), b"0707 text that compresses " * 4000, bytes(100_000)])

# The real tool that writes one member of each codec the kernel reads, as GNU cpio users pipe it.
TOOLS = {
    "zstd": ["zstd", "-q", "-c"], "gzip": ["gzip", "-n", "-c"], "xz": ["xz", "--check=crc32", "-c"],
    "lzma": ["xz", "--format=lzma", "-c"], "bzip2": ["bzip2", "-c"], "lz4": ["lz4", "-l", "-q", "-c"],
    "lzo": ["lzop", "-c"],
}
UNPACK = {"zstd": ["zstd", "-dcq"], "gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"]}


def run(command: list[str], data: bytes) -> bytes:
    assert shutil.which(command[0]), f"{command[0]} is required for these tests"
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def test_the_table_has_every_kernel_codec_once() -> None:
    assert set(CODECS) == {*TOOLS, "none"}
    assert [c.name for c in WRITTEN] == ["zstd", "gzip", "xz", "none"]  # netbuild's order of preference
    magics = [c.magic for c in CODECS.values() if c.magic]
    assert len(magics) == len(set(magics)) == 7 and NONE.magic == b""


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_each_codec_reads_its_tools_member_and_knows_where_it_ends(name: str) -> None:
    member = run(TOOLS[name], PLAIN)
    codec = CODECS[name]
    assert member.startswith(codec.magic) and detect(member) == name
    # After the member: NUL padding and the next member, as in an initrd; and not at offset 0.
    data = b"junk" * 3 + member + b"\0" * 8 + run(TOOLS[name], b"the next member")
    reader = codec.reader(ByteRange(data, 12))
    assert reader.read() == PLAIN
    assert reader.done and reader.consumed == len(member)


@pytest.mark.parametrize("name", ["zstd", "gzip", "xz", "lzma", "bzip2"])
def test_one_shot_decoding_reports_the_bytes_taken(name: str) -> None:
    member = run(TOOLS[name], PLAIN)
    assert CODECS[name].decompress(member + b"\0\0tail") == (PLAIN, len(member))


@pytest.mark.parametrize("name", ["lz4", "lzo"])
def test_codecs_without_a_python_decoder_decode_incrementally_only(name: str) -> None:
    with pytest.raises(CompressionError, match=f"^{name}: decompression not supported"):
        CODECS[name].decompress(run(TOOLS[name], PLAIN))


def test_lz4_legacy_member_sized_from_its_framing_wherever_it_starts() -> None:
    member = run(TOOLS["lz4"], PLAIN)
    data = bytes(1024) + member + b"\0" * 4 + member
    assert CODECS["lz4"].member_size(ByteRange(data, 1024).read_at, len(data) - 1024) == len(member)  # type: ignore[attr-defined]


@pytest.mark.kernel
def test_rd_options_are_the_kernels() -> None:
    """Every codec but none names the option Debian's kernel configuration sets for it."""
    config = find_kernel().parent / f"config-{kernel_release(find_kernel())}"
    text = config.read_text()
    for codec in CODECS.values():
        if codec is NONE:
            assert codec.rd_option is None  # a plain archive needs no decompressor
        else:
            assert codec.rd_option == f"CONFIG_RD_{codec.name.upper()}"
            assert f"\n{codec.rd_option}=y\n" in text, codec.rd_option


@pytest.mark.parametrize("name", ["zstd", "gzip", "xz"])
def test_written_members_decode_with_the_real_tool(name: str) -> None:
    comp = parse_compression(name)
    one_call = compress_member(comp, PLAIN)
    streamed = bytearray()
    compressor = open_compressor(comp, streamed.extend, threads=None, size=len(PLAIN))
    for start in range(0, len(PLAIN), 4096):
        compressor.write(PLAIN[start : start + 4096])
    compressor.close()
    for member in (one_call, bytes(streamed)):
        assert detect(member) == name
        assert run(UNPACK[name], member) == PLAIN


def test_none_writes_the_plain_bytes() -> None:
    out = bytearray()
    compressor = open_compressor(Compression("none", None), out.extend)
    compressor.write(PLAIN)
    compressor.close()
    assert bytes(out) == compress_member(Compression("none", None), PLAIN) == PLAIN


@pytest.mark.parametrize("comp", [Compression("lz4", 1), Compression("zstd", 20), Compression("gzip", None),
                                  Compression("none", 1)])
def test_only_the_codecs_and_levels_netbuild_writes(comp: Compression) -> None:
    with pytest.raises(CompressionError, match="not a valid codec/level"):
        compress_member(comp, b"x")
    with pytest.raises(CompressionError, match="not a valid codec/level"):
        open_compressor(comp, lambda _: None)


# Large enough for zstd's multi-threaded mode to cut it into jobs of its own.
BIG = b"".join([rng.randbytes(1 << 18), b"0707 text that compresses " * 10000, bytes(1 << 18)]) * 6


def streamed(threads: int | None, size: int | None = None) -> bytes:
    out = bytearray()
    compressor = open_compressor(Compression("zstd", 3), out.extend, threads=threads, size=size)
    compressor.write(BIG)
    compressor.close()
    return bytes(out)


def test_zstd_threading_policy() -> None:
    """The mode is the caller's (None: single-threaded; a number: multi-threaded), never the count's."""
    multi = {streamed(threads) for threads in (0, 1, 2, 4)}
    assert len(multi) == 1
    single = streamed(None)
    assert single not in multi  # the two modes frame the same input differently
    assert zstandard.get_frame_parameters(single).content_size == zstandard.CONTENTSIZE_UNKNOWN
    sized = streamed(None, size=len(BIG))
    assert zstandard.get_frame_parameters(sized).content_size == len(BIG)
    one_call = compress_member(Compression("zstd", 3), BIG)
    params = zstandard.get_frame_parameters(one_call)
    assert params.content_size == len(BIG) and params.has_checksum
    assert ZSTD.frame_size(ByteRange(one_call).read_at) == len(one_call)
    assert zstandard.ZstdDecompressor().decompress(one_call) == BIG


def test_no_other_module_knows_a_codecs_settings() -> None:
    """Magic bytes, the xz check, gzip's window bits, CONFIG_RD_* and default levels live in the table."""
    patterns = ["(?i)" + re.escape(c.magic.hex()) for c in CODECS.values() if c.magic]
    patterns += ["(?i)" + re.escape("".join(f"\\x{b:02x}" for b in c.magic[:2])) for c in CODECS.values() if c.magic]
    patterns += [f"(?i)0x{int.from_bytes(c.magic, order):x}" for c in CODECS.values() if len(c.magic) == 4
                 for order in ("little", "big")]
    patterns += [r"CONFIG_RD_[A-Z]", r"CHECK_CRC32", r"wbits", r"FORMAT_(XZ|ALONE)", r"Zstd(De)?Compressor",
                 r"zlib\.(de)?compress", r"lzma\.(LZMA|(de)?compress)", r"gzip\.(de)?compress", r"\bbz2\.",
                 r"DEFAULT_LEVELS|default_level", r"decompressobj"]
    found = []
    for path in sorted(BUILDER.rglob("*.py")):
        if path.name == "compress.py" and path.parent.name == "formats":
            continue
        # Hex blobs (builder/preinit's machine code) hold every short byte pattern somewhere: not a codec's.
        text = re.sub(r'"[0-9a-f]{64,}"', '""', path.read_text())
        found += [f"{path.relative_to(BUILDER)}: {p}" for p in patterns if re.search(p, text)]
    assert found == []
