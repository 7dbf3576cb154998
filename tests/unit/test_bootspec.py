"""Reading bootspec v1 (boot.json) as nixpkgs writes it, and refusing, field by field, what is not."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from builder.bootspec import BOOTSPEC_V1, SPECIALISATION_V1, jq_key, parse_bootspec
from builder.errors import NetbuildError

FILE = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-x/boot.json"
TOP = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-x"
CHILD = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-x"
KERNEL = "/nix/store/cccccccccccccccccccccccccccccccc-linux-6.1/bzImage"
INITRD = "/nix/store/dddddddddddddddddddddddddddddddd-initrd-linux-6.1/initrd"


def v1(toplevel: str, params: list[str], **extra: Any) -> dict[str, Any]:
    return {"init": f"{toplevel}/init", "initrd": INITRD, "kernel": KERNEL, "kernelParams": params,
            "label": "NixOS 24.05 (Linux 6.1)", "system": "x86_64-linux", "toplevel": toplevel, **extra}


def document(**specialisations: dict[str, Any]) -> dict[str, Any]:
    """A toplevel's boot.json as nixpkgs writes it: its own v1 object and each child's whole boot.json."""
    return {BOOTSPEC_V1: v1(TOP, ["console=ttyS0", "quiet"], initrdSecrets=f"{TOP}/append-initrd-secrets"),
            SPECIALISATION_V1: specialisations}


def child(params: list[str]) -> dict[str, Any]:
    return {BOOTSPEC_V1: v1(CHILD, params), SPECIALISATION_V1: {}}


def parse(doc: Any) -> Any:
    return parse_bootspec(json.dumps(doc, indent=2, sort_keys=True).encode(), FILE)


def test_a_document_as_nixpkgs_writes_it() -> None:
    spec = parse(document(rescue=child(["systemd.unit=rescue.target"]), fast=child(["quiet", "mitigations=off"])))
    assert spec.file == FILE
    main = spec.main
    assert (main.kernel, main.init, main.initrd, main.toplevel) == (KERNEL, f"{TOP}/init", INITRD, TOP)
    assert (main.kernel_params, main.label, main.system) == (("console=ttyS0", "quiet"), "NixOS 24.05 (Linux 6.1)",
                                                             "x86_64-linux")
    assert spec.names() == ["fast", "rescue"]  # name order, as jq --sort-keys writes them
    fast = spec.specialisation("fast")
    assert fast is not None and fast.kernel_params == ("quiet", "mitigations=off") and fast.init == f"{CHILD}/init"
    assert spec.specialisation("missing") is None
    assert [e.toplevel for e in spec.entries()] == [TOP, CHILD, CHILD]
    assert main.field("kernel") == '."org.nixos.bootspec.v1".kernel'
    assert fast.field("kernelParams") == '."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1".kernelParams'
    assert fast.named("init") == f'{FILE}: field ."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1".init'


def test_no_specialisations_and_no_initrd() -> None:
    no_initrd = {k: v for k, v in v1(TOP, []).items() if k != "initrd"}
    spec = parse({BOOTSPEC_V1: no_initrd, SPECIALISATION_V1: {}})
    assert (spec.specialisations, spec.main.initrd, spec.main.kernel_params) == ((), None, ())
    # Generators other than nixpkgs may leave the specialisation object out altogether.
    assert parse({BOOTSPEC_V1: v1(TOP, [])}).specialisations == ()


def test_the_field_paths_are_jq_paths() -> None:
    doc = document(**{"fast": child(["a"]), "with space": child(["b"])})
    path = parse(doc).specialisation("with space").field("kernelParams")  # type: ignore[union-attr]
    assert path == '."org.nixos.specialisation.v1"."with space"."org.nixos.bootspec.v1".kernelParams'
    shown = subprocess.run(["jq", "-c", path], input=json.dumps(doc).encode(), capture_output=True, check=True)
    assert json.loads(shown.stdout) == ["b"]
    assert (jq_key("kernel"), jq_key("a-b"), jq_key('q"')) == (".kernel", '."a-b"', '."q\\""')


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


MAIN = '."org.nixos.bootspec.v1"'
FAST = '."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1"'


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], 'not a bootspec document (a JSON object with \'org.nixos.bootspec.v1\'), but [1, 2]'),
        ({"org.nixos.bootspec.v2": {}}, f"field {MAIN} is missing (netbuild reads bootspec v1)"),
        ({BOOTSPEC_V1: "x"}, f'field {MAIN} must be an object, not "x"'),
        ({BOOTSPEC_V1: _without(v1(TOP, []), "kernel")}, f"field {MAIN}.kernel is missing"),
        ({BOOTSPEC_V1: _without(v1(TOP, []), "kernelParams")}, f"field {MAIN}.kernelParams is missing"),
        ({BOOTSPEC_V1: _without(v1(TOP, []), "toplevel")}, f"field {MAIN}.toplevel is missing"),
        ({BOOTSPEC_V1: v1(TOP, "quiet")}, f'field {MAIN}.kernelParams must be a list of strings, not "quiet"'),
        ({BOOTSPEC_V1: v1(TOP, ["quiet", 3])}, f"field {MAIN}.kernelParams[1] must be a string, not 3"),
        ({BOOTSPEC_V1: v1(TOP, ["a\nb"])}, f'field {MAIN}.kernelParams[0] contains a control character: "a\\nb"'),
        ({BOOTSPEC_V1: v1(TOP, [], kernel=None)}, f"field {MAIN}.kernel must be a non-empty string, not null"),
        ({BOOTSPEC_V1: v1(TOP, [], init="")}, f'field {MAIN}.init must be a non-empty string, not ""'),
        ({BOOTSPEC_V1: v1(TOP, [], initrd=["x"])}, f'field {MAIN}.initrd must be a non-empty string, not ["x"]'),
        ({BOOTSPEC_V1: v1(TOP, [], label="two\nlines")}, f'field {MAIN}.label contains a control character'),
        ({BOOTSPEC_V1: v1(TOP, []), SPECIALISATION_V1: []},
         '."org.nixos.specialisation.v1" must be an object of specialisations, not []'),
        (document(fast="x"),  # type: ignore[arg-type]
         '."org.nixos.specialisation.v1".fast must be the specialisation\'s boot.json (an object), not "x"'),
        (document(fast={SPECIALISATION_V1: {}}), f"field {FAST} is missing (netbuild reads bootspec v1)"),
        (document(fast={BOOTSPEC_V1: _without(v1(CHILD, []), "init")}), f"field {FAST}.init is missing"),
        (document(fast={BOOTSPEC_V1: v1(CHILD, [7])}), f"field {FAST}.kernelParams[0] must be a string, not 7"),
    ],
)
def test_refusals_name_the_file_and_the_field(doc: Any, message: str) -> None:
    with pytest.raises(NetbuildError) as err:
        parse(doc)
    assert str(err.value).startswith(f"{FILE}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data", [b"{\"org.nixos.bootspec.v1\": ", b"\xff\xfe", b""])
def test_not_json(data: bytes) -> None:
    with pytest.raises(NetbuildError, match=rf"^{re.escape(FILE)}: not valid JSON \("):
        parse_bootspec(data, FILE)


def test_a_long_wrong_value_is_shortened() -> None:
    with pytest.raises(NetbuildError) as err:
        parse({BOOTSPEC_V1: v1(TOP, "x" * 500)})
    assert str(err.value).endswith('not "' + "x" * 59 + "…")
