"""Drive the real Nix on this machine: build the test fixtures and read closure metadata."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# As root without a daemon: no build users, no sandbox (the fixtures build with host tools),
# and no substituters so that an offline machine does not wait on cache.nixos.org.
NIX_CONFIG = "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command"


def nix_env() -> dict[str, str]:
    """The environment every Nix command of the tests runs in."""
    return {**os.environ, "NIX_CONFIG": NIX_CONFIG}


def run_nix(args: list[str], *, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    """Run a Nix command, returning its stdout; fail with its stderr so a broken build is legible."""
    proc = subprocess.run(args, input=stdin, capture_output=True, env=env or nix_env(), timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def nix_path_literal(path: Path) -> str:
    """A Nix expression for a host path, safe for any characters (for `--arg NAME EXPR`)."""
    quoted = json.dumps(str(path)).replace("${", "\\${")
    return f"/. + {quoted}"


def nix_build(expr_file: Path, args: dict[str, str], argstrs: dict[str, str] | None = None) -> str:
    """Build `expr_file` with `--arg` (Nix expressions) and `--argstr` values; return the out path."""
    cmd = ["nix-build", "--no-out-link", str(expr_file)]
    for name, expr in args.items():
        cmd += ["--arg", name, expr]
    for name, value in (argstrs or {}).items():
        cmd += ["--argstr", name, value]
    out = run_nix(cmd).strip().splitlines()
    if len(out) != 1:
        raise AssertionError(f"expected one out path from {expr_file}, got {out}")
    return out[0]


def path_info(paths: list[str]) -> list[dict[str, Any]]:
    """`nix path-info --json -r`: the list form (Nix ≤ 2.18) of the closure of `paths`."""
    info = json.loads(run_nix(["nix", "path-info", "--json", "-r", *paths]))
    if not isinstance(info, list):
        raise AssertionError(f"this Nix prints the object form; the tests expect Nix 2.8: {info!r:.200}")
    return info


def attrs_closure(paths: list[str]) -> dict[str, Any]:
    """The real structured-attrs `exportReferencesGraph` JSON (`{"closure": [...]}`) of `paths`:
    what nixpkgs' closureInfo reads, straight from Nix."""
    out = nix_build(FIXTURES / "closure-attrs.nix", {}, {"rootsJSON": json.dumps(paths)})
    attrs = json.loads(Path(out).read_text())
    return {"closure": attrs["closure"]}


def to_object_form(list_form: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Convert path-info's list form to newer Nix's (≥ 2.19) object form keyed by store path."""
    return {entry["path"]: {key: value for key, value in entry.items() if key != "path"} for entry in list_form}
