"""Closure JSON no Nix could have written, refused with one short line: numbers longer than Nix's
64-bit ones (Python would refuse them with a traceback past 4,300 digits), hashes of a megabyte
(cut short in the message, which still says what a hash should look like), and references that
go round in a circle between different paths (a path's references exist before it does)."""

from __future__ import annotations

import json

import pytest

from builder.closure import load_closure
from builder.closure_json import ECHO_LIMIT
from builder.errors import NetbuildError

A = f"/nix/store/{'a' * 32}-alpha"
B = f"/nix/store/{'b' * 32}-beta"
C = f"/nix/store/{'c' * 32}-gamma"


def refused(data: bytes | object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(NetbuildError) as err:
        load_closure("closure.json", raw)
    message = str(err.value)
    assert "\n" not in message and len(message) < 2 * ECHO_LIMIT, message[:1000]
    return message


@pytest.mark.parametrize("field", ["narSize", "registrationTime", "closureSize"])
@pytest.mark.parametrize("digits", [21, 4301, 100_000])
def test_an_integer_longer_than_any_nix_writes_is_refused(field: str, digits: int) -> None:
    data = f'[{{"path": "{A}", "references": [], "{field}": {"1" * digits}}}]'.encode()
    message = refused(data)
    assert message.startswith(f"closure.json: an integer of {digits} digits (1111")
    assert message.endswith("Nix writes none longer than 20 (64 bits)")
    assert ("…" in message) == (digits > ECHO_LIMIT)


def test_integers_of_64_bits_are_read() -> None:
    doc = [{"path": A, "references": [], "narSize": 2**64 - 1, "registrationTime": -(2**63)}]
    (entry,) = load_closure("closure.json", json.dumps(doc).encode())
    assert entry.nar_size == 2**64 - 1


@pytest.mark.parametrize(
    ("nar_hash", "explained"),
    [
        ("sha256:" + "x" * 1_000_000, "expected sha256 as 'sha256-<base64>'"),
        ("sha256-" + "x" * 1_000_000, "bad sha256 base64"),
        ("x" * 1_000_000, "expected sha256 as 'sha256-<base64>'"),
        ("m" * 1_000_000 + "d5:abc", "is not sha256"),
    ],
)
def test_a_megabyte_of_hash_is_cut_short_and_still_explained(nar_hash: str, explained: str) -> None:
    message = refused([{"path": A, "references": [], "narHash": nar_hash}])
    assert message.startswith(f"closure.json: {A}: narHash: hash ") and "…" in message
    assert explained in message


def test_two_paths_that_reference_each_other_are_refused() -> None:
    message = refused([{"path": A, "references": [B]}, {"path": B, "references": [A, B]}])
    assert message == (
        f"closure.json: {A} and {B} reference each other, which Nix never records (a path's references "
        "exist before it does: only a path's reference to itself can point back)"
    )


def test_a_longer_circle_is_refused_naming_its_paths() -> None:
    message = refused([{"path": A, "references": [B]}, {"path": B, "references": [C]},
                       {"path": C, "references": [A]}])
    assert message.startswith(f"closure.json: references go round in a circle: {A} → {B} → {C} → {A}, which")


def test_a_long_circle_is_named_in_part() -> None:
    paths = [f"/nix/store/{str(i).zfill(32).replace('0', 'a')}-p{i}" for i in range(1000)]
    doc = [{"path": p, "references": [paths[(i + 1) % len(paths)]]} for i, p in enumerate(paths)]
    message = refused(doc)
    assert "(1000 paths)" in message and message.count(min(paths)) == 2  # where it starts and ends


def test_references_to_itself_and_shared_ones_are_fine() -> None:
    # A diamond (A → B, A → C, B → C, C → C) goes round nowhere.
    closure = load_closure("closure.json", json.dumps([
        {"path": A, "references": [A, B, C]}, {"path": B, "references": [C]}, {"path": C, "references": [C]},
    ]).encode())
    assert closure.roots() == [A]
