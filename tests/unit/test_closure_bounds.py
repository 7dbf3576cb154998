"""Closure JSON no Nix could have written, refused with one short line: numbers longer than Nix's
64-bit ones (Python would refuse them with a traceback past 4,300 digits)."""

from __future__ import annotations

import json

import pytest

from builder.closure import load_closure
from builder.closure_json import ECHO_LIMIT
from builder.errors import NetbuildError

A = f"/nix/store/{'a' * 32}-alpha"


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
