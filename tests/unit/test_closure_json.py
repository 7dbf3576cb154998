"""Every closure-JSON shape in FORMATS.md's table, written out by hand from the table: each reads as
the same closure, and each way such a document can be wrong is one line naming what is wrong."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from support.closure_shapes import from_nix32, nix32

from builder.closure import Closure, StorePath, load_closure
from builder.errors import NetbuildError
from builder.formats.nixhash import format_nix32, format_sri

HASH_A = "a" * 32
HASH_B = "b" * 32
A = f"/nix/store/{HASH_A}-alpha"
B = f"/nix/store/{HASH_B}-beta"
DRV = f"/nix/store/{'d' * 32}-alpha.drv"
DIGEST_A = bytes(range(32))
DIGEST_B = bytes(range(1, 33))
BASE = {A: A.removeprefix("/nix/store/"), B: B.removeprefix("/nix/store/"), DRV: DRV.removeprefix("/nix/store/")}
MISSING = (
    f"closure.json: {B} is not valid in the store it was queried from (Nix reports it missing: build or fetch it first)"
)
FOREIGN = (
    "closure.json: storeDir '/gnu/store' is not /nix/store: store path hashes are computed over their store "
    "directory, so these paths cannot be moved to /nix/store, the store netbuild boots (build the closure with a "
    "/nix/store store)"
)


def parse(doc: object) -> Closure:
    return load_closure("closure.json", json.dumps(doc).encode())


def refused(doc: object) -> str:
    """The one line a document is refused with."""
    with pytest.raises(NetbuildError) as err:
        parse(doc)
    message = str(err.value)
    assert "\n" not in message
    return message


# Nix 2.4–2.14 (Debian 12's 2.8): what the others are compared with. A has a deriver, B none.
NIX_2_8 = [
    {"path": A, "narHash": format_sri(DIGEST_A), "narSize": 120, "references": [B, A], "deriver": DRV,
     "registrationTime": 1700000000, "ultimate": True},
    {"path": B, "narHash": format_sri(DIGEST_B), "narSize": 96, "references": [], "registrationTime": 1700000000},
]
EXPECTED = [
    StorePath(A, DIGEST_A, 120, (A, B), DRV),
    StorePath(B, DIGEST_B, 96, (), None),
]


def keyed(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in entries}


NIX_2_3 = [dict(e, narHash=format_nix32(DIGEST_A if e["path"] == A else DIGEST_B)) for e in NIX_2_8]
NIX_2_18 = [dict(e, valid=True) for e in NIX_2_8]
LIX = [dict(e, valid=True, closureSize=216 if e["path"] == A else 96) for e in NIX_2_8]
NIX_2_19 = keyed(NIX_2_8)
NIX_2_23 = {
    A: {"ca": None, "deriver": DRV, "narHash": format_sri(DIGEST_A), "narSize": 120, "references": [A, B],
        "registrationTime": 1700000000, "signatures": [], "ultimate": True},
    B: {"ca": None, "deriver": None, "narHash": format_sri(DIGEST_B), "narSize": 96,
        "references": [], "registrationTime": None, "signatures": [], "ultimate": False},
}
NIX_2_33 = {path: {**entry, "version": 1, "storeDir": "/nix/store"} for path, entry in NIX_2_23.items()}
V2 = {
    "version": 2,
    "storeDir": "/nix/store",
    "info": {
        BASE[A]: {"ca": None, "deriver": BASE[DRV], "narHash": format_sri(DIGEST_A), "narSize": 120,
                  "references": [BASE[A], BASE[B]], "registrationTime": 1700000000,
                  "signatures": ["cache.example.org-1:c2lnbmF0dXJl"], "ultimate": True},
        BASE[B]: {"ca": {"method": "nar", "hash": format_sri(DIGEST_B)}, "deriver": None,
                  "narHash": format_sri(DIGEST_B), "narSize": 96, "references": [], "registrationTime": None,
                  "signatures": [], "ultimate": False, "version": 2, "storeDir": "/nix/store"},
    },
}
V3 = {
    **V2,
    "version": 3,
    "info": {
        BASE[A]: {**V2["info"][BASE[A]], "signatures": [{"keyName": "cache.example.org-1", "sig": "c2lnbmF0dXJl"}]},
        BASE[B]: {**V2["info"][BASE[B]], "version": 3},
    },
}
# exportReferencesGraph's fields (no deriver: the comparison below allows for that), nix32 hashes.
ATTRS = [{"closureSize": lix["closureSize"], "narHash": e["narHash"], "narSize": e["narSize"], "path": e["path"],
          "references": e["references"]} for e, lix in zip(NIX_2_3, LIX, strict=True)]

SHAPES: dict[str, object] = {
    "nix-2.3 (sha256:<nix32>)": NIX_2_3,
    "nix-2.8": NIX_2_8,
    "nix-2.18 (valid: true)": NIX_2_18,
    "lix (valid, closureSize)": LIX,
    "nix-2.19 (object)": NIX_2_19,
    "nix-2.23 (null/false/[] fields)": NIX_2_23,
    "nix-2.33 json-format 1 (version, storeDir per entry)": NIX_2_33,
    "json-format 2 (base names, ca object)": V2,
    "json-format 3 (signature objects)": V3,
    "exportReferencesGraph named closure": {"closure": ATTRS},
    "exportReferencesGraph under another name": {"system-graph": ATTRS},
    "exportReferencesGraph named info": {"info": ATTRS},
    "exportReferencesGraph named version": {"version": ATTRS},
    "unknown fields": [dict(e, provenance={"x": 1}, url="nar/x.nar.zst", compression="zstd", downloadHash="x",
                            downloadSize=1) for e in NIX_2_8],
}


@pytest.mark.parametrize("doc", SHAPES.values(), ids=SHAPES.keys())
def test_every_shape_reads_as_the_same_closure(doc: object) -> None:
    closure = parse(doc)
    expected = EXPECTED
    if isinstance(doc, dict) and len(doc) == 1:  # exportReferencesGraph: no deriver in it
        expected = [StorePath(sp.path, sp.nar_hash, sp.nar_size, sp.references) for sp in EXPECTED]
    assert list(closure) == expected
    assert closure.roots() == [A]


def test_a_nar_size_of_0_is_unknown_and_verified_against_the_files() -> None:
    doc = [dict(e, narSize=0) for e in NIX_2_3]  # an old database's "not recorded"
    sp = parse(doc)[A]
    assert sp.nar_size is None  # as when absent: computed from the files
    assert sp.verified(DIGEST_A, 4321).nar_size == 4321
    with pytest.raises(NetbuildError, match="NAR hash mismatch"):
        sp.verified(DIGEST_B, 4321)  # the hash is still checked


@pytest.mark.parametrize(
    "doc",
    [
        [NIX_2_3[0], {"path": B, "valid": False}],
        [NIX_2_18[0], {"path": B, "valid": False}],
        [LIX[0], {"path": B, "valid": False}],
        {A: NIX_2_19[A], B: None},
        {A: NIX_2_23[A], B: None},
        {A: NIX_2_33[A], B: None},
        {**V2, "info": {BASE[A]: V2["info"][BASE[A]], BASE[B]: None}},
        {**V3, "info": {BASE[A]: V3["info"][BASE[A]], BASE[B]: None}},
    ],
    ids=["nix-2.3", "nix-2.18", "lix", "nix-2.19", "nix-2.23", "nix-2.33", "json-format-2", "json-format-3"],
)
def test_a_path_reported_missing_is_named(doc: object) -> None:
    assert refused(doc) == MISSING


@pytest.mark.parametrize(
    "doc",
    [
        {path: dict(entry, storeDir="/gnu/store") for path, entry in NIX_2_33.items()},
        [dict(e, storeDir="/gnu/store") for e in NIX_2_8],
        {**V2, "storeDir": "/gnu/store"},
        {**V3, "storeDir": "/gnu/store"},
        {**V2, "info": {**V2["info"], BASE[B]: {**V2["info"][BASE[B]], "storeDir": "/gnu/store"}}},
    ],
    ids=["json-format-1", "list", "json-format-2", "json-format-3", "json-format-2 entry"],
)
def test_another_store_dir_is_refused(doc: object) -> None:
    assert refused(doc) == FOREIGN


def test_the_wrapper_must_say_its_store_dir() -> None:
    assert "without the storeDir" in refused({k: v for k, v in V2.items() if k != "storeDir"})
    assert refused({**V2, "storeDir": None}) == FOREIGN.replace("'/gnu/store'", "None")


WRAPPER = 'closure.json: {"version", "storeDir", "info"} document with'
VERSIONS = "netbuild reads versions 2 and 3 (nix path-info --json-format 2 or 3)"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {**V2, "info": {BASE[A]: V2["info"][BASE[A]]}},  # B referenced, not in info
            f"closure.json: {A} references {B}, which is not in the closure",
        ),
        (
            {**V2, "info": {A: V2["info"][BASE[A]], BASE[B]: V2["info"][BASE[B]]}},
            f"closure.json: info['{A}']: '{A}' is not a store path base name (<hash>-<name>)",
        ),
        (
            {**V2, "info": {**V2["info"], BASE[A]: {**V2["info"][BASE[A]], "references": [A]}}},
            f"closure.json: info['{BASE[A]}'].references: '{A}' is not a store path base name",
        ),
        (
            {**V2, "info": {**V2["info"], BASE[A]: {**V2["info"][BASE[A]], "deriver": DRV}}},
            f"closure.json: info['{BASE[A]}'].deriver: '{DRV}' is not a store path base name",
        ),
        (
            {**V2, "info": {"short-x": V2["info"][BASE[B]]}},
            "closure.json: info['short-x']: '/nix/store/short-x' is not a valid store path",
        ),
        ({**V2, "info": {BASE[B]: 7}}, f"closure.json: info['{BASE[B]}']: expected an object describing a store path"),
        ({**V2, "info": [1]}, "closure.json: 'info' must be an object keyed by store path base name, got [1]"),
        ({**V2, "version": 4}, f"{WRAPPER} version 4: {VERSIONS}"),
        ({**V2, "version": 1}, f"{WRAPPER} version 1: {VERSIONS}"),
        ({**V2, "version": "2"}, f"{WRAPPER} version '2': {VERSIONS}"),
        ({**V2, "version": 2.0}, f"{WRAPPER} version 2.0: {VERSIONS}"),
        ({**V2, "version": True}, f"{WRAPPER} version True: {VERSIONS}"),
        ({k: v for k, v in V2.items() if k != "version"}, f"{WRAPPER} no version: {VERSIONS}"),
    ],
    ids=["reference-not-in-info", "full-path-key", "full-path-reference", "full-path-deriver", "bad-base-name",
         "entry-not-object", "info-not-object", "version-4", "version-1", "version-string", "version-float",
         "version-bool", "no-version"],
)
def test_a_malformed_version_2_document_names_the_entry(doc: object, message: str) -> None:
    assert refused(doc).startswith(message)


NOT_A_CLOSURE = (
    'closure.json: not a closure: netbuild reads `nix path-info --json --recursive` output (a list of entries with '
    '"path"; an object keyed by store path; or {"version": 2|3, "storeDir": …, "info": {…}}) or a structured-attrs '
    'exportReferencesGraph ({"<name>": [entries]})'
)


@pytest.mark.parametrize(
    "doc",
    [{"hello": "world"}, {}, 42, "closure", None, {"a": [], "b": []}, {A: NIX_2_19[A], "closure": []}],
    ids=["object", "empty-object", "number", "string", "null", "two-lists", "path-and-other-keys"],
)
def test_a_document_of_no_known_shape_names_the_shapes(doc: object) -> None:
    assert refused(doc) == NOT_A_CLOSURE


@pytest.mark.parametrize(
    "doc",
    [
        [{"path": "/nix/store/" + "x" * 1_000_000, "references": []}],
        [{"path": A, "references": [], "narSize": list(range(100_000))}],
        [{"path": A, "references": [], "narHash": "sha256:" + "0" * 1_000_000}],
        [{"path": A, "references": [], "narHash": ["x"] * 100_000}],
        [{"path": ["x"] * 100_000, "references": []}],
        {A: {"path": "x" * 1_000_000, "references": []}},
        {**V2, "info": {"x/" * 100_000: None}},
        {**V2, "version": "9" * 100_000},
        {**V2, "storeDir": "/" * 100_000},
        {"y" * 100_000: ["x"]},
    ],
)
def test_echoed_values_are_cut_short(doc: object) -> None:
    message = refused(doc)
    assert len(message) < 1000 and "…" in message, message[:2000]


def test_the_shape_converter_writes_nix32_as_nix_does() -> None:
    # `nix hash to-sri sha256:09n3…` on Nix 2.8 (a text content address of the fixture closure).
    digest = base64.b64decode("VXxf1GGv+6oGw/f6irBwCBOBHMF04KJemhcaFZ+fwyY=")
    assert nix32(digest) == "09n3kygia6hpk9ga5q3lq4f824q8f2q8myppqc3amyxgc7a5yz2m"
    assert from_nix32(nix32(digest)) == digest
