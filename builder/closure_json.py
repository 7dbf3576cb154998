"""The closure-JSON shapes the Nix family writes, brought to one vocabulary.

Which producer writes which shape (see the README's list of accepted inputs):

- a list of entries with `path`: `nix path-info --json --recursive` of Nix 2.3–2.18 and Lix
  (2.15 on add `"valid": true`, Lix also `closureSize`); a path the store lacks is
  `{"path": P, "valid": false}`;
- an object keyed by full store path: Nix 2.19–2.32 and Determinate Nix (2.23 on write absent
  fields as `null`/`false`/`[]`), and Nix 2.33's `--json-format 1` (each entry also carries
  `"version": 1` and `"storeDir"`); a path the store lacks is a `null` value;
- `{"version": 2|3, "storeDir": D, "info": {…}}`: `--json-format 2` and `3` (Nix 2.33, 2.35), keyed
  by base name `<hash>-<name>`, with `references` and `deriver` base names too; missing is `null`;
- `{"<name>": [entries]}`: a structured-attrs `exportReferencesGraph` (the member of `.attrs.json`).

This module knows only those shapes: where the entries are, what path each one is for, whether
the producer said the path is missing, and which store directory it speaks of. It hands every
entry on with full store paths, as the list form writes them, so that what the fields mean
(hash notations, sizes, the paths' syntax, closedness) is decided once, in builder/closure.py.
Fields it does not name are left alone: each producer adds its own (`ca`, `signatures`,
`closureSize`, `registrationTime`, `ultimate`, …) and netbuild needs none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder.errors import NetbuildError

# Error messages echo values from the document. A store path is at most 255 characters, so this
# shows any real one whole, and a megabyte of garbage as one short line.
ECHO_LIMIT = 300

# Nix writes its numbers (narSize, closureSize, registrationTime) as 64-bit integers: 20 digits at
# most. A longer one is refused as it is read: Python refuses to convert one of more than 4,300
# digits with a ValueError (sys.int_max_str_digits, which is global, so not to be raised here),
# and takes quadratic time below that.
MAX_INT_DIGITS = 20

# The versions of the {"version", "storeDir", "info"} form (nix path-info --json-format N).
WRAPPER_VERSIONS = (2, 3)

SHAPES = (
    "`nix path-info --json --recursive` output (a list of entries with \"path\"; an object keyed by store "
    'path; or {"version": 2|3, "storeDir": …, "info": {…}}) or a structured-attrs exportReferencesGraph '
    '({"<name>": [entries]})'
)


def clip(text: str) -> str:
    """text, cut to ECHO_LIMIT characters with an ellipsis."""
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 1] + "…"


def shown(value: object) -> str:
    """A value from the document as an error message quotes it: its repr, clipped."""
    return clip(repr(value))


def bounded_int(text: str) -> int:
    """json.loads's parse_int: an integer literal of the document, if Nix could have written it."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise NetbuildError(
            f"an integer of {digits} digits ({clip(text)}): Nix writes none longer than {MAX_INT_DIGITS} (64 bits)"
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One store path's entry, whatever shape it came in."""

    where: str  # how error messages point at it in the document: [3], ['/nix/store/…'], info['…'], closure[0]
    path: object  # its store path, full, as the document gives it (not yet checked); None if it gives none
    fields: Mapping[str, Any] | None  # its object, store paths in it full; None: the producer reports it missing


def entries(source: str, doc: Any, store_dir: str) -> list[Entry]:
    """The entries of a parsed closure document, in document order. `store_dir` is the only store
    directory accepted: a document about another one is refused (see _check_store_dir)."""
    if isinstance(doc, list):
        return [_listed(source, f"[{i}]", item, store_dir) for i, item in enumerate(doc)]
    if isinstance(doc, dict):
        # Tried in this order because the shapes overlap only here: an exportReferencesGraph member
        # may be named anything, "info" or "version" included, but it alone has a list as its value.
        if len(doc) == 1 and isinstance(next(iter(doc.values())), list):
            ((name, items),) = doc.items()
            return [_listed(source, f"{clip(name)}[{i}]", item, store_dir) for i, item in enumerate(items)]
        if "info" in doc or "version" in doc:
            return _wrapped(source, doc, store_dir)
        if doc and all(key.startswith("/") for key in doc):
            return [_keyed(source, key, value, store_dir) for key, value in doc.items()]
    raise NetbuildError(f"{source}: not a closure: netbuild reads {SHAPES}")


def _listed(source: str, where: str, item: Any, store_dir: str) -> Entry:
    """An entry of the list form or of an exportReferencesGraph: an object naming its own path."""
    if not isinstance(item, Mapping):
        raise NetbuildError(f"{source}: {where}: expected an object describing a store path")
    if item.get("valid") is False:  # Nix ≤ 2.18 and Lix list a path the store lacks, with no other field
        return Entry(where, item.get("path"), None)
    _check_store_dir(source, item.get("storeDir"), store_dir)
    return Entry(where, item.get("path"), item)


def _keyed(source: str, key: str, value: Any, store_dir: str) -> Entry:
    """An entry of the object form, keyed by its full store path."""
    where = f"[{shown(key)}]"
    if value is None:
        return Entry(where, key, None)
    if not isinstance(value, Mapping):
        raise NetbuildError(f"{source}: {where}: expected an object describing a store path")
    _check_store_dir(source, value.get("storeDir"), store_dir)
    # The object form leaves `path` out; an entry that has one anyway must not contradict its key.
    if value.get("path", key) != key:
        raise NetbuildError(f"{source}: {where}: its 'path' {shown(value['path'])} differs from its key")
    return Entry(where, key, value)


def _wrapped(source: str, doc: Mapping[str, Any], store_dir: str) -> list[Entry]:
    """The entries of {"version": 2|3, "storeDir": D, "info": {base name: entry | null}}."""
    form = '{"version", "storeDir", "info"}'
    version = doc.get("version")
    if type(version) is not int or version not in WRAPPER_VERSIONS:  # not bool, not 2.0: Nix writes integers
        said = f"version {shown(version)}" if "version" in doc else "no version"
        raise NetbuildError(
            f"{source}: {form} document with {said}: netbuild reads versions "
            f"{' and '.join(map(str, WRAPPER_VERSIONS))} (nix path-info --json-format 2 or 3)"
        )
    if "storeDir" not in doc:
        # Keys and references are base names: without the store directory they name no path at all.
        raise NetbuildError(f"{source}: version {version} document without the storeDir its base names are in")
    _check_store_dir(source, doc["storeDir"], store_dir, required=True)
    info = doc.get("info")
    if not isinstance(info, Mapping):
        raise NetbuildError(f"{source}: 'info' must be an object keyed by store path base name, got {shown(info)}")
    return [_based(source, key, value, store_dir) for key, value in info.items()]


def _based(source: str, key: str, value: Any, store_dir: str) -> Entry:
    """An entry of a version 2 or 3 `info`: key, `references` and `deriver` are base names."""
    where = f"info[{shown(key)}]"
    path = _full_path(source, where, key, store_dir)
    if value is None:
        return Entry(where, path, None)
    if not isinstance(value, Mapping):
        raise NetbuildError(f"{source}: {where}: expected an object describing a store path")
    _check_store_dir(source, value.get("storeDir"), store_dir)
    fields = dict(value)
    references = value.get("references")
    if isinstance(references, list):  # anything else is refused with the other forms' words, in closure.py
        fields["references"] = [_full_path(source, f"{where}.references", ref, store_dir) for ref in references]
    if value.get("deriver") is not None:
        fields["deriver"] = _full_path(source, f"{where}.deriver", value["deriver"], store_dir)
    return Entry(where, path, fields)


def _full_path(source: str, where: str, name: object, store_dir: str) -> str:
    """The full store path of a base name. Only that it is a base name is checked here; that it
    names a well-formed store path is checked with every other form's paths, in closure.py."""
    if not isinstance(name, str) or not name or "/" in name:
        raise NetbuildError(
            f"{source}: {where}: {shown(name)} is not a store path base name (<hash>-<name>), "
            "which is how versions 2 and 3 name store paths"
        )
    return f"{store_dir}/{name}"


def _check_store_dir(source: str, value: object, store_dir: str, *, required: bool = False) -> None:
    """Refuse a document about a store other than store_dir. Such paths cannot be relocated: a store
    path's hash is computed over its store directory, so under /nix/store they would be other paths,
    and the images boot /nix/store. (A copy of a /nix/store store under another root, as
    `nix copy --to DIR` makes, still says /nix/store: that is --store-root's job.)"""
    if value is None and not required:
        return  # the forms before Nix 2.33 do not say: they are about the store they were queried from
    if value != store_dir:
        raise NetbuildError(
            f"{source}: storeDir {shown(value)} is not {store_dir}: store path hashes are computed over "
            f"their store directory, so these paths cannot be moved to {store_dir}, the store netbuild "
            f"boots (build the closure with a {store_dir} store)"
        )
