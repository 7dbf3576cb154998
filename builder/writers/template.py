"""The substitution netbuild's templates use (ipxe/*.ipxe, builder/run/run-qemu.sh).

`@name@` is replaced by a value, as nixpkgs' substituteAll does: iPXE and bash both own `${…}`,
which must reach them untouched. A block between a line `@foreach NAME@` and a line `@end@` is
written once per entry of the list NAME, with that entry's values (a menu's images, a chain
script's settings). Nothing else: no conditions, no expressions. A placeholder without a value is
an error, so a template and its writer cannot drift apart silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from builder.errors import NetbuildError

Values = Mapping[str, "str | Sequence[Mapping[str, str]]"]

_PLACEHOLDER = re.compile(r"@([a-z_]+)@")
_BLOCK = re.compile(r"^@foreach ([a-z_]+)@\n(.*?)^@end@\n", re.MULTILINE | re.DOTALL)


def substitute(text: str, values: Values, *, template: str) -> str:
    # One pass over the template: a value is never scanned again, so an `@` in it stays as it is.
    scalars = _scalars(values)
    parts: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        parts.append(_fill(text[position:match.start()], scalars, template))
        entries = values.get(match.group(1))
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            raise NetbuildError(f"template {template}: @foreach {match.group(1)}@ has no list to repeat over")
        parts.extend(_fill(match.group(2), {**scalars, **entry}, template) for entry in entries)
        position = match.end()
    parts.append(_fill(text[position:], scalars, template))
    return "".join(parts)


def _scalars(values: Values) -> dict[str, str]:
    return {k: v for k, v in values.items() if isinstance(v, str)}


def _fill(text: str, values: Mapping[str, str], template: str) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise NetbuildError(f"template {template}: unknown placeholder @{key}@")
        return values[key]

    return _PLACEHOLDER.sub(one, text)
