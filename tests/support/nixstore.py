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


def nix_version() -> tuple[int, ...]:
    """This machine's Nix, e.g. (2, 8, 0) on Debian 12 and (2, 26, 3) on Debian 13."""
    words = run_nix(["nix", "--version"]).split()
    return tuple(int(part) for part in words[-1].split(".") if part.isdigit())


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


def path_info(paths: list[str], *, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`nix path-info --json -r`: the closure of `paths` in the list form, whatever this Nix prints."""
    return list_form(json.loads(run_nix(["nix", "path-info", "--json", "-r", *paths], env=env)))


def all_path_info(env: dict[str, str]) -> list[dict[str, Any]]:
    """`nix path-info --json --all` of the store `env` points Nix at, in the list form."""
    return list_form(json.loads(run_nix(["nix", "path-info", "--json", "--all"], env=env)))


def list_form(info: Any) -> list[dict[str, Any]]:
    """path-info's JSON in the list form (Nix ≤ 2.18) the tests work with. Nix 2.19 and later (Debian
    13's 2.26) print an object keyed by store path instead; a `null` value there, or `"valid": false`
    in the list, is a path the store does not have: a broken fixture, never a closure to test with."""
    if isinstance(info, dict):
        info = [{"path": path, **(entry or {"valid": False})} for path, entry in sorted(info.items())]
    if not isinstance(info, list):
        raise AssertionError(f"nix path-info printed neither the list nor the object form: {info!r:.200}")
    missing = [entry.get("path") for entry in info if entry.get("valid") is False]
    if missing:
        raise AssertionError(f"nix path-info says these paths are not valid in the store: {missing}")
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
