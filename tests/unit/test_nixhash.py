from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess

import pytest

from builder.formats.nixhash import (
    NIX32_ALPHABET,
    HashFormatError,
    format_nix32,
    format_sri,
    nix32_decode,
    nix32_encode,
    parse_sha256,
)

NIX_ENV = {
    **os.environ,
    "NIX_CONFIG": "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command",
}

DIGESTS = [
    hashlib.sha256(b"").digest(),
    hashlib.sha256(b"abc").digest(),
    bytes(range(32)),
    b"\xff" * 32,
    b"\x00" * 32,
]


def nix_hash(command: str, *hex_digests: str) -> list[str]:
    nix = shutil.which("nix")
    assert nix, "the nix CLI is required for these tests (Debian package nix-bin)"
    result = subprocess.run(
        [nix, "hash", command, "--type", "sha256", *hex_digests],
        env=NIX_ENV, check=True, capture_output=True, text=True,
    )
    return result.stdout.split()


@pytest.mark.nix
def test_nix32_matches_nix_to_base32() -> None:
    expected = nix_hash("to-base32", *(digest.hex() for digest in DIGESTS))
    assert [nix32_encode(digest) for digest in DIGESTS] == expected
    assert [format_nix32(digest) for digest in DIGESTS] == [f"sha256:{text}" for text in expected]


@pytest.mark.nix
def test_sri_matches_nix_to_sri() -> None:
    expected = nix_hash("to-sri", *(digest.hex() for digest in DIGESTS))
    assert [format_sri(digest) for digest in DIGESTS] == expected


def test_known_value() -> None:
    # sha256("") as nix prints it; independent of the CLI so a broken nix cannot hide a regression.
    assert nix32_encode(DIGESTS[0]) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"


def test_nix32_round_trip_and_lengths() -> None:
    for size, length in ((32, 52), (20, 32), (1, 2), (0, 0)):
        data = os.urandom(size)
        text = nix32_encode(data)
        assert len(text) == length
        assert set(text) <= set(NIX32_ALPHABET)
        assert nix32_decode(text) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("e" * 52, "invalid character"),  # 'e' is not in the alphabet
        ("0" * 51, "impossible length"),
        ("0" * 54, "impossible length"),  # 53 would be 33 bytes; 54 is no size
        ("2" + "0" * 51, "non-zero bits"),  # 260 bits hold 256: the top digit may only be 0 or 1
    ],
)
def test_nix32_decode_rejects(text: str, message: str) -> None:
    with pytest.raises(HashFormatError, match=message):
        nix32_decode(text)


def test_nix32_decode_accepts_top_digit_one() -> None:
    assert nix32_decode("1" + "0" * 51) == b"\x00" * 31 + b"\x80"


def test_parse_sha256_every_notation() -> None:
    digest = DIGESTS[1]
    b64 = base64.b64encode(digest).decode()
    notations = [
        f"sha256-{b64}",
        f"sha256:{nix32_encode(digest)}",
        f"sha256:{digest.hex()}",
        f"sha256:{digest.hex().upper()}",
        f"sha256:{b64}",
        digest.hex(),
        nix32_encode(digest),
    ]
    for text in notations:
        assert parse_sha256(text) == digest, text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("md5:" + "0" * 32, "algorithm 'md5'"),
        ("sha512-" + base64.b64encode(b"\0" * 64).decode(), "algorithm 'sha512'"),
        ("sha256-" + base64.b64encode(b"\0" * 31).decode(), "base64"),
        ("sha256-" + "!" * 44, "base64"),
        ("sha256:" + "0" * 63, "expected sha256"),
        ("sha256:" + "g" * 64, "expected sha256"),
        ("sha256:" + "e" * 52, "invalid character"),
        ("0" * 63, "expected sha256"),
        ("", "expected sha256"),
        ("z" * 64, "expected sha256"),
    ],
)
def test_parse_sha256_rejects(text: str, message: str) -> None:
    with pytest.raises(HashFormatError, match=message):
        parse_sha256(text)


def test_format_rejects_wrong_digest_size() -> None:
    with pytest.raises(HashFormatError):
        format_nix32(b"\0" * 20)
    with pytest.raises(HashFormatError):
        format_sri(b"\0" * 33)
