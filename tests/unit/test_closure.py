"""Closure parsing and validation: the three input forms, hash forms, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.closure import paths, requisites

from builder.closure import Closure, StoreFS, StorePath, load_closure, validate_store_path
from builder.errors import NetbuildError
from builder.formats.nixhash import format_nix32, format_sri

A = "/nix/store/" + "a" * 32 + "-alpha"
B = "/nix/store/" + "b" * 32 + "-beta"
DIGEST_A = bytes(range(32))
DIGEST_B = bytes(range(1, 33))


def list_form() -> list[dict]:
    return [
        {"path": A, "narHash": format_sri(DIGEST_A), "narSize": 120, "references": [B, A]},
        {"path": B, "narHash": format_sri(DIGEST_B), "narSize": 96, "references": []},
    ]


def parse(doc: object) -> Closure:
    return load_closure("closure.json", json.dumps(doc).encode())


def test_three_forms_give_the_same_closure() -> None:
    from_list = parse(list_form())
    obj = {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in list_form()}
    attrs = {"closure": [dict(e, narHash=format_nix32(DIGEST_A if e["path"] == A else DIGEST_B)) for e in list_form()]}
    for other in (parse(obj), parse(attrs)):
        assert list(other) == list(from_list)
    assert paths(from_list) == [A, B]
    assert from_list[A].references == (A, B)  # sorted, self-reference kept
    assert from_list[A].nar_hash == DIGEST_A


@pytest.mark.parametrize(
    "text",
    [format_sri(DIGEST_A), format_nix32(DIGEST_A), "sha256:" + DIGEST_A.hex(), DIGEST_A.hex()],
)
def test_every_hash_form_is_accepted(text: str) -> None:
    doc = list_form()
    doc[0]["narHash"] = text
    assert parse(doc)[A].nar_hash == DIGEST_A


def test_missing_hash_and_size_are_allowed() -> None:
    doc = list_form()
    del doc[1]["narHash"], doc[1]["narSize"]
    sp = parse(doc)[B]
    assert (sp.nar_hash, sp.nar_size) == (None, None)


def test_roots_are_the_unreferenced_paths() -> None:
    closure = parse(list_form())
    assert closure.roots() == [A]
    assert requisites(closure, A) == {A, B}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "closure.json: malformed JSON"),
        ({"foo": 1}, "closure.json: not a closure"),
        ([], "the closure is empty"),
        ([{"path": A, "references": [B]}], f"{A} references {B}, which is not in the closure"),
        ([{"path": "/nix/store/short-x", "references": []}], "'/nix/store/short-x' is not a valid store path"),
        ([{"path": "/usr/bin/x", "references": []}], "is not a store path"),
        ([{"path": "/nix/store/" + "e" * 32 + "-x", "references": []}], "is not a valid store path"),
        ([{"path": "/nix/store/" + "a" * 32 + "-.hidden", "references": []}], "is not a valid store path"),
        ([{"path": A}], f"{A}: missing field 'references'"),
        ([{"path": A, "references": [], "narHash": "md5-abc"}], f"{A}: narHash:"),
        ([{"path": A, "references": [], "narSize": -3}], f"{A}: narSize must be a non-negative integer"),
        ([{"references": []}], "[0]: missing field 'path'"),
        ({A: None}, f"{A} is not valid in the store"),
        ([{"path": A, "references": [], "narSize": 1}, {"path": A, "references": [], "narSize": 2}], "appears twice"),
    ],
)
def test_bad_input_names_what_is_wrong(doc: object, message: str) -> None:
    data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
    with pytest.raises(NetbuildError) as err:
        load_closure("closure.json", data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_validate_store_path_accepts_real_names() -> None:
    path = "/nix/store/lyklk3c3m7576knld0dg2rpspz1x9apk-busybox-static+x_1.2?=a"
    assert validate_store_path(path) == path


def test_resolve_follows_store_links_under_the_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "nix" / "store"
    (store / B[11:]).mkdir(parents=True)
    (store / B[11:] / "bzImage").write_bytes(b"k")
    (store / A[11:]).mkdir()
    (store / A[11:] / "kernel").symlink_to(f"{B}/bzImage")  # absolute: must not be looked up on the host
    (store / A[11:] / "rel").symlink_to("kernel")
    fs = StoreFS(tmp_path)
    assert fs.resolve(f"{A}/rel") == f"{B}/bzImage"
    with pytest.raises(NetbuildError, match="does not exist"):
        fs.resolve(f"{A}/missing")


def test_check_present_names_the_missing_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    closure = Closure([StorePath(A, None, None, ())], source="x")
    with pytest.raises(NetbuildError, match=f"--store-root {tmp_path}: there is no {tmp_path}/nix/store directory"):
        StoreFS(tmp_path).check_present(closure)
    (tmp_path / "nix" / "store").mkdir(parents=True)
    with pytest.raises(NetbuildError, match=f"{A} does not exist on disk under --store-root"):
        StoreFS(tmp_path).check_present(closure)


def test_preflight_refuses_an_init_whose_link_leaves_the_closure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from builder.checks.preflight import preflight
    from builder.plan import Options, make_plan
    from builder.recipe import load_recipe

    top = tmp_path / A.lstrip("/")
    top.mkdir(parents=True)
    (top / "init").symlink_to("/bin/sh")  # a host program: would be missing at boot
    kernel = sorted(Path("/boot").glob("vmlinuz-*"))[-1]  # make install puts Debian's kernel there
    closure = Closure([StorePath(A, None, None, ())], source="x")
    plan = make_plan(closure, load_recipe("netboot"), Options(store_root=tmp_path, kernel=kernel, init=f"{A}/init"))
    with pytest.raises(NetbuildError, match=r"--init .*/init is not in the image: /bin is outside /nix/store"):
        preflight(plan)
