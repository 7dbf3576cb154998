"""Nix's hash notations: nix32 (its own base32), SRI, hex, and parsing any of them to a sha256 digest."""

from __future__ import annotations

import base64
import binascii
import functools
import re

NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_NIX32_VALUES = {char: value for value, char in enumerate(NIX32_ALPHABET)}

SHA256_SIZE = 32
SHA256_HEX_LENGTH = 64
SHA256_NIX32_LENGTH = 52
SHA256_BASE64_LENGTH = 44

_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# A message quotes at most this much of a hash: every notation Nix writes is shorter ('sha256:' and
# 64 hex digits, 71 characters), so the start of a longer one is enough to recognise it, and a
# megabyte of garbage makes a message short enough to still say what a hash should look like.
_QUOTE_LIMIT = 100

_EXPECTED = "expected sha256 as 'sha256-<base64>', 'sha256:<nix32|hex|base64>', 64 hex or 52 nix32 chars"


class HashFormatError(ValueError):
    """A hash string that is not a well-formed sha256 in one of the notations Nix uses."""


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= _QUOTE_LIMIT else repr(text[:_QUOTE_LIMIT]) + "…"


def nix32_length(size: int) -> int:
    """Number of nix32 characters for `size` bytes (52 for a sha256, 32 for a store path hash)."""
    return (size * 8 - 1) // 5 + 1 if size else 0


def nix32_encode(data: bytes) -> str:
    # Nix reads the bytes as one little-endian number and prints its 5-bit digits most significant first,
    # which is why a nix32 string is not a plain base32 of the bytes.
    number = int.from_bytes(data, "little")
    length = nix32_length(len(data))
    return "".join(NIX32_ALPHABET[(number >> (5 * n)) & 0x1F] for n in range(length - 1, -1, -1))


def nix32_decode(text: str) -> bytes:
    size = len(text) * 5 // 8
    if nix32_length(size) != len(text):
        raise HashFormatError(f"nix32 string {_quoted(text)} has impossible length {len(text)}")
    number = 0
    for char in text:
        value = _NIX32_VALUES.get(char)
        if value is None:
            raise HashFormatError(f"nix32 string {_quoted(text)} has invalid character {_quoted(char)}")
        number = (number << 5) | value
    if number >> (8 * size):
        # The top digit carries more bits than the bytes need; Nix rejects non-zero spare bits too.
        raise HashFormatError(f"nix32 string {_quoted(text)} has non-zero bits beyond {size} bytes")
    return number.to_bytes(size, "little")


def _decode_base64(text: str, original: str) -> bytes:
    if len(text) != SHA256_BASE64_LENGTH or not _BASE64_RE.fullmatch(text):
        raise HashFormatError(f"hash {_quoted(original)}: bad sha256 base64 (want 44 characters); {_EXPECTED}")
    try:
        digest = base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise HashFormatError(f"hash {_quoted(original)}: bad base64 ({error})") from None
    if len(digest) != SHA256_SIZE:
        raise HashFormatError(f"hash {_quoted(original)}: base64 decodes to {len(digest)} bytes, want 32")
    return digest


def _decode_unprefixed(text: str, original: str) -> bytes:
    """The part after 'sha256:' (or a bare hash): notation is told apart by length, as Nix does."""
    if len(text) == SHA256_HEX_LENGTH and _HEX_RE.fullmatch(text):
        return bytes.fromhex(text)
    if len(text) == SHA256_NIX32_LENGTH:
        try:
            return nix32_decode(text)
        except HashFormatError as error:
            raise HashFormatError(f"hash {_quoted(original)}: {error}") from None
    if len(text) == SHA256_BASE64_LENGTH:
        return _decode_base64(text, original)
    raise HashFormatError(f"hash {_quoted(original)}: {_EXPECTED}")


def parse_sha256(text: str) -> bytes:
    """The 32-byte digest written in any notation Nix prints for a sha256."""
    if text.startswith("sha256-"):
        return _decode_base64(text[len("sha256-") :], text)
    if text.startswith("sha256:"):
        return _decode_unprefixed(text[len("sha256:") :], text)
    algorithm = re.match(r"([a-z0-9]+)[-:]", text)
    if algorithm:
        raise HashFormatError(
            f"hash {_quoted(text)}: algorithm {_quoted(algorithm.group(1))} is not sha256; {_EXPECTED}"
        )
    if len(text) in (SHA256_HEX_LENGTH, SHA256_NIX32_LENGTH):
        return _decode_unprefixed(text, text)
    raise HashFormatError(f"hash {_quoted(text)}: {_EXPECTED}")


def _check_digest(digest: bytes) -> None:
    if len(digest) != SHA256_SIZE:
        raise HashFormatError(f"sha256 digest must be 32 bytes, got {len(digest)}")


@functools.lru_cache(maxsize=8192)  # the registration and the manifest each print every path's hash
def format_nix32(digest: bytes) -> str:
    """'sha256:<nix32>', the notation closureInfo's registration uses."""
    _check_digest(digest)
    return "sha256:" + nix32_encode(digest)


def format_sri(digest: bytes) -> str:
    """'sha256-<base64>', the notation newer Nix prints in path-info."""
    _check_digest(digest)
    return "sha256-" + base64.b64encode(digest).decode("ascii")
