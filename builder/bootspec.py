"""Bootspec v1 (`<toplevel>/boot.json`, RFC 0125): what a NixOS system says about how to boot it.

nixpkgs writes it into every toplevel (jq --sort-keys):

    {"org.nixos.bootspec.v1": {"init", "initrd"?, "initrdSecrets"?, "kernel", "kernelParams", "label",
                               "system", "toplevel"},
     "org.nixos.specialisation.v1": {"<name>": <the child's whole boot.json>, …}}   ({} when none)

When a toplevel has one, the plan takes the kernel, init, kernel parameters and stage 1 from it
rather than from the symlinks beside it (`kernel`, `init`, `kernel-params`, `initrd`), as NixOS's own
boot loaders do. This module only reads the document and checks its shape; whether its paths are in
the closure is the plan's question (builder/plan.py), which knows the closure.

Every refusal names the file and the field as a jq path (`."org.nixos.bootspec.v1".kernel`), so that
`jq '<path>' boot.json` shows the value at fault. Members netbuild does not use — `initrdSecrets`
(secrets appended by a boot loader on the machine itself, which a served image cannot carry),
extensions, a child's own specialisations — are not looked at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from builder.errors import NetbuildError

BOOT_JSON = "boot.json"
BOOTSPEC_V1 = "org.nixos.bootspec.v1"
SPECIALISATION_V1 = "org.nixos.specialisation.v1"

_JQ_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHOWN = 60  # characters of a wrong value quoted in a message


def jq_key(key: str) -> str:
    """`.key`, quoted when jq needs it (`."org.nixos.bootspec.v1"`)."""
    return f".{key}" if _JQ_IDENTIFIER.fullmatch(key) else f".{json.dumps(key, ensure_ascii=False)}"


@dataclass(frozen=True)
class BootEntry:
    """One bootable system the document describes: the toplevel itself, or one of its specialisations."""

    file: str  # the boot.json it is in
    at: str  # jq path of its "org.nixos.bootspec.v1" object
    kernel: str
    kernel_params: tuple[str, ...]
    init: str
    initrd: str | None  # its stage 1; absent when the system has none (boot.initrd.enable = false)
    label: str
    system: str
    toplevel: str

    def field(self, key: str) -> str:
        """The jq path of one of its fields, as the manifest records it."""
        return self.at + jq_key(key)

    def named(self, key: str) -> str:
        """One of its fields as an error message names it: the file, then the field."""
        return f"{self.file}: field {self.field(key)}"


@dataclass(frozen=True)
class Bootspec:
    file: str  # <toplevel>/boot.json, as a store path
    main: BootEntry
    specialisations: tuple[tuple[str, BootEntry], ...]  # sorted by name, as jq --sort-keys writes them

    def names(self) -> list[str]:
        return [name for name, _ in self.specialisations]

    def specialisation(self, name: str) -> BootEntry | None:
        return dict(self.specialisations).get(name)

    def entries(self) -> list[BootEntry]:
        return [self.main, *(entry for _, entry in self.specialisations)]


def parse_bootspec(data: bytes, file: str) -> Bootspec:
    """The document in `data`, read from `file` (named in every refusal)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NetbuildError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise NetbuildError(f"{file}: not a bootspec document (a JSON object with {BOOTSPEC_V1!r}), but {_show(doc)}")
    main = _entry(doc, "", file)
    children = doc.get(SPECIALISATION_V1, {})  # nixpkgs always writes it; other generators may leave it out
    if not isinstance(children, dict):
        raise NetbuildError(f"{file}: field {jq_key(SPECIALISATION_V1)} must be an object of specialisations, "
                            f"not {_show(children)}")
    specialisations = []
    for name in sorted(children):
        at = jq_key(SPECIALISATION_V1) + jq_key(name)
        child = children[name]
        if not isinstance(child, dict):
            raise NetbuildError(f"{file}: field {at} must be the specialisation's boot.json (an object), "
                                f"not {_show(child)}")
        specialisations.append((name, _entry(child, at, file)))
    return Bootspec(file=file, main=main, specialisations=tuple(specialisations))


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _entry(doc: dict[str, Any], prefix: str, file: str) -> BootEntry:
    at = prefix + jq_key(BOOTSPEC_V1)
    if BOOTSPEC_V1 not in doc:
        raise NetbuildError(f"{file}: field {at} is missing (netbuild reads bootspec v1)")
    v1 = doc[BOOTSPEC_V1]
    if not isinstance(v1, dict):
        raise NetbuildError(f"{file}: field {at} must be an object, not {_show(v1)}")

    def string(key: str) -> str:
        if key not in v1:
            raise NetbuildError(f"{file}: field {at}{jq_key(key)} is missing")
        return _one_line(v1[key], f"{at}{jq_key(key)}", file)

    params = v1.get("kernelParams")
    if "kernelParams" not in v1:
        raise NetbuildError(f"{file}: field {at}.kernelParams is missing")
    if not isinstance(params, list):
        raise NetbuildError(f"{file}: field {at}.kernelParams must be a list of strings, not {_show(params)}")
    return BootEntry(
        file=file,
        at=at,
        kernel=string("kernel"),
        kernel_params=tuple(_one_line(p, f"{at}.kernelParams[{i}]", file, empty=True) for i, p in enumerate(params)),
        init=string("init"),
        initrd=string("initrd") if "initrd" in v1 else None,
        label=string("label"),
        system=string("system"),
        toplevel=string("toplevel"),
    )


def _one_line(value: Any, field: str, file: str, *, empty: bool = False) -> str:
    # What these strings become — a kernel command line, an iPXE menu item, a store path — is one line.
    if not isinstance(value, str) or not (value or empty):
        kind = "string" if empty else "non-empty string"
        raise NetbuildError(f"{file}: field {field} must be a {kind}, not {_show(value)}")
    if not value.isprintable():
        raise NetbuildError(f"{file}: field {field} contains a control character: {_show(value)}")
    return value
