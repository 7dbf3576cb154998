"""Every producer's closure JSON of the real fixture closure builds the OUT of the plain list form,
byte for byte; a path reported missing and a foreign storeDir are one error line, OUT untouched.

The documents come from support.closure_shapes: written from this machine's real `nix path-info
--json -r` by the format rules of FORMATS.md, not by netbuild's reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import closure_shapes
from support.nixstore import nix_version
from test_bad_input import snapshot
from test_main_job import tree

pytestmark = pytest.mark.nix

FOREIGN_STORE = "/custom/store"


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def test_the_converter_writes_what_nix_writes(system_closure) -> None:  # type: ignore[no-untyped-def]
    # The one shape this machine's Nix also writes itself: exportReferencesGraph (nix32 hashes,
    # closureSize, ca): the converter's rules against Nix's own output.
    real = json.loads(system_closure.attrs_json.read_text())["closure"]
    producer = closure_shapes.export_references_graph_of(nix_version())
    (derived,) = closure_shapes.every_shape(system_closure.path_info)[producer].values()
    assert sorted(derived, key=lambda e: e["path"]) == sorted(real, key=lambda e: e["path"])


@pytest.mark.parametrize("producer", closure_shapes.PRODUCERS)
def test_every_producers_closure_json_builds_the_same_out(
    producer: str, tmp_path: Path, system_closure, built_out: Path, run_netbuild
) -> None:  # type: ignore[no-untyped-def]
    closure = write(tmp_path / f"{producer}.json", closure_shapes.every_shape(system_closure.path_info)[producer])
    out = tmp_path / "out"
    run_netbuild(str(closure), "-o", str(out))
    built, expected = tree(out), tree(built_out)
    assert sorted(built) == sorted(expected)
    assert [name for name in expected if built[name] != expected[name]] == [], f"{producer} gave a different OUT"


@pytest.fixture(scope="module")
def existing_out(system_closure, run_netbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """An OUT a refused build must leave exactly as it is."""
    out = tmp_path_factory.mktemp("existing") / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out))
    return out


def _refused_with(line: str, closure: Path, out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(out)
    proc = run_netbuild(str(closure), "-o", str(out), check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert stderr == f"error: {line}\n"
    assert snapshot(out) == before
    assert [p for p in os.listdir(out.parent) if p.startswith(".out.")] == []


def _missing_path(system_closure) -> str:  # type: ignore[no-untyped-def]
    """A path some other path references, reported missing: the referrer does not hide the error."""
    referenced = {ref for e in system_closure.path_info for ref in e["references"] if ref != e["path"]}
    return sorted(referenced)[0]


@pytest.mark.parametrize("producer", closure_shapes.REPORT_MISSING)
def test_a_path_reported_missing_is_one_error_line(
    producer: str, tmp_path: Path, system_closure, existing_out: Path, run_netbuild
) -> None:  # type: ignore[no-untyped-def]
    missing = _missing_path(system_closure)
    doc = closure_shapes.missing_shapes(system_closure.path_info, missing)[producer]
    closure = write(tmp_path / f"{producer}-missing.json", doc)
    line = (
        f"{closure}: {missing} is not valid in the store it was queried from "
        "(Nix reports it missing: build or fetch it first)"
    )
    _refused_with(line, closure, existing_out, run_netbuild)


@pytest.mark.parametrize("producer", closure_shapes.SAY_STORE_DIR)
def test_a_foreign_store_dir_is_one_error_line(
    producer: str, tmp_path: Path, system_closure, existing_out: Path, run_netbuild
) -> None:  # type: ignore[no-untyped-def]
    doc = closure_shapes.foreign_shapes(system_closure.path_info, FOREIGN_STORE)[producer]
    closure = write(tmp_path / f"{producer}-foreign.json", doc)
    line = (
        f"{closure}: storeDir '{FOREIGN_STORE}' is not /nix/store: store path hashes are computed over their "
        "store directory, so these paths cannot be moved to /nix/store, the store netbuild boots "
        "(build the closure with a /nix/store store)"
    )
    _refused_with(line, closure, existing_out, run_netbuild)
