"""Every closure-JSON shape of the Nix family, derived from one real `nix path-info --json -r`.

The input is the list form this machine's Nix (2.8) prints. Each producer's document is written
from it by the rules of the table in FORMATS.md ("Closure JSON: what each Nix-family tool
writes"), with the field sets of each Nix's path-info; nothing here comes from netbuild (not even
its nix32 code), so a misreading in builder/closure_json.py cannot be mirrored here and pass.

- `every_shape(info)`: each producer's document of the whole closure (all must build the same OUT);
- `missing_shapes(info, path)`: each producer that can report a path missing, reporting `path` so;
- `foreign_shapes(info, store_dir)`: each producer that writes its storeDir, about `store_dir`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

STORE_DIR = "/nix/store"

Info = list[dict[str, Any]]  # the list form: one entry per store path, `path` in each
# Store path → its list-form entry, or None for a path the store lacks.
Entries = Mapping[str, dict[str, Any] | None]
# A producer's writer: the entries and the store directory they are in → the producer's document.
Writer = Callable[[Entries, str], Any]

_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(digest: bytes) -> str:
    """Nix's base32, as libutil's hash.cc prints it: digit n (most significant first) is the five
    bits at bit offset 5n of the bytes read little-endian."""
    chars = []
    for n in range((len(digest) * 8 - 1) // 5, -1, -1):
        byte, bit = divmod(n * 5, 8)
        value = digest[byte] >> bit
        if byte + 1 < len(digest):
            value |= digest[byte + 1] << (8 - bit)
        chars.append(_NIX32[value & 0x1F])
    return "".join(chars)


def from_nix32(text: str, size: int = 32) -> bytes:
    """The inverse of nix32, as hash.cc parses it: the last character holds bits 0-4."""
    digest = bytearray(size)
    for n, char in enumerate(reversed(text)):
        value = _NIX32.index(char)
        byte, bit = divmod(n * 5, 8)
        digest[byte] |= (value << bit) & 0xFF
        if byte + 1 < size:
            digest[byte + 1] |= value >> (8 - bit)
    return bytes(digest)


def sri_digest(sri: str) -> bytes:
    assert sri.startswith("sha256-"), sri
    return base64.b64decode(sri.removeprefix("sha256-"))


def sri(digest: bytes) -> str:
    return "sha256-" + base64.b64encode(digest).decode()


def nix32_hash(sri_hash: str) -> str:
    """SRI as Nix 2.3 and exportReferencesGraph write a narHash: `sha256:<nix32>`."""
    return "sha256:" + nix32(sri_digest(sri_hash))


# Nix ≤ 2.32 renders a content address as a string (`text:sha256:<nix32>`, `fixed:r:sha256:…`,
# `fixed:sha256:…`); version 2 and 3 as {"method", "hash"} with the method's JSON name.
_CA_METHODS = {"text:": "text", "fixed:r:": "nar", "fixed:git:": "git", "fixed:": "flat"}


def ca_object(ca: str | None) -> dict[str, str] | None:
    if ca is None:
        return None
    prefix = next(p for p in _CA_METHODS if ca.startswith(p))  # fixed:r: and fixed:git: before fixed:
    algorithm, _, digits = ca.removeprefix(prefix).partition(":")
    assert algorithm == "sha256", ca
    digest = bytes.fromhex(digits) if len(digits) == 64 else from_nix32(digits)
    return {"method": _CA_METHODS[prefix], "hash": sri(digest)}


def base_name(path: str, store_dir: str) -> str:
    assert path.startswith(store_dir + "/"), (path, store_dir)
    return path.removeprefix(store_dir + "/")


def closure_sizes(info: Info) -> dict[str, int]:
    """closureSize (Lix, `-S`; exportReferencesGraph): the sum of the NAR sizes of a path's
    requisites, of those in `info` (a path the store lacks adds nothing)."""
    refs = {e["path"]: e["references"] for e in info}
    sizes = {e["path"]: e["narSize"] for e in info}

    def requisites(root: str) -> set[str]:
        seen, todo = set(), [root]
        while todo:
            path = todo.pop()
            if path in refs and path not in seen:
                seen.add(path)
                todo.extend(refs[path])
        return seen

    return {path: sum(sizes[p] for p in requisites(path)) for path in refs}


# --- the producers, in the table's order -----------------------------------------------------

def _listed(entries: Entries, entry: Callable[[dict[str, Any]], dict[str, Any]]) -> Info:
    """The list form: a path the store lacks is {"path": P, "valid": false}."""
    return [{"path": p, "valid": False} if e is None else entry(e) for p, e in entries.items()]


def nix_2_3(entries: Entries, _store_dir: str) -> Info:
    return _listed(entries, lambda e: {**e, "narHash": nix32_hash(e["narHash"])})


def nix_2_3_old_database(entries: Entries, _store_dir: str) -> Info:
    """An old database's narSize of 0 ("not recorded")."""
    return _listed(entries, lambda e: {**e, "narHash": nix32_hash(e["narHash"]), "narSize": 0})


def nix_2_8(entries: Entries, _store_dir: str) -> Info:
    return _listed(entries, dict)


def nix_2_18(entries: Entries, _store_dir: str) -> Info:
    return _listed(entries, lambda e: {**e, "valid": True})


def lix(entries: Entries, _store_dir: str) -> Info:
    sizes = closure_sizes([e for e in entries.values() if e is not None])
    return _listed(entries, lambda e: {**e, "valid": True, "closureSize": sizes[e["path"]]})


def nix_2_19(entries: Entries, _store_dir: str) -> dict[str, Any]:
    """Keyed by path, the path left out of the entry; missing is null."""
    return {p: None if e is None else {k: v for k, v in e.items() if k != "path"} for p, e in entries.items()}


def _nullable(e: dict[str, Any]) -> dict[str, Any]:
    """Nix 2.23's fields, every one written: absent as null, false or []."""
    return {
        "ca": e.get("ca"),
        "deriver": e.get("deriver"),
        "narHash": e["narHash"],
        "narSize": e["narSize"],
        "references": e["references"],
        "registrationTime": e.get("registrationTime"),
        "signatures": e.get("signatures", []),
        "ultimate": e.get("ultimate", False),
    }


def nix_2_23(entries: Entries, _store_dir: str) -> dict[str, Any]:
    return {p: None if e is None else _nullable(e) for p, e in entries.items()}


def nix_2_33_format_1(entries: Entries, store_dir: str) -> dict[str, Any]:
    """`--json` = `--json-format 1`: as 2.23, each entry also saying its version and store dir."""
    return {p: None if e is None else {**_nullable(e), "version": 1, "storeDir": store_dir} for p, e in entries.items()}


def _based(e: dict[str, Any], store_dir: str, version: int) -> dict[str, Any]:
    """A version 2/3 entry: store paths as base names, ca an object. Nix 2.33's path-info.cc also
    writes version and storeDir in each entry, as in version 1."""
    fields = _nullable(e)
    signatures: list[Any] = fields["signatures"]
    if version == 3:
        signatures = [dict(zip(("keyName", "sig"), s.split(":", 1), strict=True)) for s in signatures]
    return {
        **fields,
        "version": version,
        "storeDir": store_dir,
        "references": [base_name(r, store_dir) for r in fields["references"]],
        "deriver": None if fields["deriver"] is None else base_name(fields["deriver"], store_dir),
        "ca": ca_object(fields["ca"]),
        "signatures": signatures,
    }


def _wrapper(version: int) -> Writer:
    def write(entries: Entries, store_dir: str) -> dict[str, Any]:
        info = {
            base_name(p, store_dir): None if e is None else _based(e, store_dir, version) for p, e in entries.items()
        }
        return {"version": version, "storeDir": store_dir, "info": info}

    return write


def export_references_graph(entries: Entries, _store_dir: str, *, valid: bool = False) -> dict[str, Any]:
    """A structured-attrs .attrs.json member, named as the derivation pleases (here not "closure"):
    the fields (`ca` only when there is one) and the nix32 hashes Nix writes there; from Nix 2.15 on
    (the path-info JSON it shares gained it then) also `"valid": true`. It has no way to say a path
    is missing."""
    assert all(e is not None for e in entries.values()), "exportReferencesGraph lists only valid paths"
    info = [e for e in entries.values() if e is not None]
    sizes = closure_sizes(info)
    graph = [
        {**({"ca": e["ca"]} if e.get("ca") else {}), "closureSize": sizes[e["path"]],
         "narHash": nix32_hash(e["narHash"]), "narSize": e["narSize"], "path": e["path"], "references": e["references"],
         **({"valid": True} if valid else {})}
        for e in info
    ]
    return {"system-graph": graph}


def export_references_graph_2_15(entries: Entries, store_dir: str) -> dict[str, Any]:
    return export_references_graph(entries, store_dir, valid=True)


def export_references_graph_of(nix_version: tuple[int, ...]) -> str:
    """Which exportReferencesGraph producer a Nix of this version is."""
    return "export-references-graph-nix-2.15" if nix_version >= (2, 15) else "export-references-graph"


PRODUCERS: dict[str, Writer] = {
    "nix-2.3": nix_2_3,
    "nix-2.3-old-database": nix_2_3_old_database,
    "nix-2.8": nix_2_8,
    "nix-2.18": nix_2_18,
    "lix-2.93": lix,
    "nix-2.19": nix_2_19,
    "nix-2.23": nix_2_23,
    "nix-2.33-json-format-1": nix_2_33_format_1,
    "nix-2.33-json-format-2": _wrapper(2),
    "nix-2.35-json-format-3": _wrapper(3),
    "export-references-graph": export_references_graph,
    "export-references-graph-nix-2.15": export_references_graph_2_15,
}
REPORT_MISSING = [name for name in PRODUCERS if not name.startswith("export-references-graph")]
SAY_STORE_DIR = ["nix-2.33-json-format-1", "nix-2.33-json-format-2", "nix-2.35-json-format-3"]


def _by_path(info: Info) -> dict[str, dict[str, Any] | None]:
    return {e["path"]: e for e in info}


def every_shape(info: Info) -> dict[str, Any]:
    return {name: write(_by_path(info), STORE_DIR) for name, write in PRODUCERS.items()}


def missing_shapes(info: Info, path: str) -> dict[str, Any]:
    """`path` reported missing (its referrers still naming it), as each producer reports that."""
    entries = {**_by_path(info), path: None}
    return {name: PRODUCERS[name](entries, STORE_DIR) for name in REPORT_MISSING}


def relocated(info: Info, store_dir: str) -> Info:
    """The same closure as a store whose storeDir is store_dir names it. (A real such store would
    have other hashes too: they are computed over the store dir. Only the shape matters here.)"""

    def move(path: str) -> str:
        return store_dir + "/" + base_name(path, STORE_DIR)

    return [
        {**e, "path": move(e["path"]), "references": [move(r) for r in e["references"]],
         **({"deriver": move(e["deriver"])} if e.get("deriver") else {})}
        for e in info
    ]


def foreign_shapes(info: Info, store_dir: str) -> dict[str, Any]:
    """The closure as each producer that writes storeDir would describe it from a store_dir store."""
    entries = _by_path(relocated(info, store_dir))
    return {name: PRODUCERS[name](entries, store_dir) for name in SAY_STORE_DIR}
