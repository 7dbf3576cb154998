"""OUT's registration is what Nix itself accepts and what nixpkgs' closureInfo would write."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import SystemClosure
from support.nixstore import all_path_info, nix_env, run_nix

pytestmark = pytest.mark.nix

# nixpkgs pkgs/build-support/closure-info.nix, buildCommand (non-empty case), verbatim apart
# from reading the attrs file named by $1 instead of $NIX_ATTRS_JSON_FILE.
CLOSURE_INFO_SCRIPT = r"""
set -euo pipefail
out=$2
jq -r ".closure | map(.narSize) | add" < "$1" > $out/total-nar-size
jq -r '.closure | map([.path, .narHash, .narSize, "", (.references | length)] + .references) | add | map("\(.)\n") | add' < "$1" | head -n -1 > $out/registration
jq -r '.closure[].path' < "$1" > $out/store-paths
"""  # noqa: E501 - kept verbatim

# What a store path's entry must agree on between two Nix databases (not deriver or times:
# closureInfo's registration has no deriver).
COMPARED_FIELDS = ("path", "narHash", "narSize", "references")


def fresh_db_env(tmp_path: Path) -> dict[str, str]:
    """Nix with its database and logs in `tmp_path`, over the real /nix/store."""
    return {
        **nix_env(),
        "NIX_STORE_DIR": "/nix/store",
        "NIX_STATE_DIR": str(tmp_path / "state"),
        "NIX_LOG_DIR": str(tmp_path / "log"),
        "NIX_REMOTE": "local",  # never the host's daemon, which would use the host's database
    }


def path_summary(info: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(({k: entry.get(k) for k in COMPARED_FIELDS} for entry in info), key=lambda e: str(e["path"]))


def test_nix_loads_and_verifies_the_registration(
    built_out: Path, system_closure: SystemClosure, tmp_path: Path
) -> None:
    env = fresh_db_env(tmp_path)
    run_nix(["nix-store", "--load-db"], env=env, stdin=(built_out / "registration").read_bytes())

    # Compare before verifying: --verify quietly "fixes" some bad entries (an all-zero hash).
    # The new database knows exactly the closure, with the host's hashes, sizes and references.
    loaded = all_path_info(env)
    assert path_summary(loaded) == path_summary(system_closure.path_info)
    for path in system_closure.paths:
        for query in ("--hash", "--references", "--size"):
            fresh = run_nix(["nix-store", "--query", query, path], env=env)
            host = run_nix(["nix-store", "--query", query, path])
            assert fresh == host, f"nix-store --query {query} {path}"

    verify = subprocess.run(
        ["nix-store", "--verify", "--check-contents"], env=env, capture_output=True, text=True, timeout=600
    )
    assert verify.returncode == 0, verify.stderr
    # Nix 2.8 prints only progress ("reading the Nix store...", "checking ...") when all is well;
    # anything else ("path ... was modified", "fixing missing hash", warnings) is a finding.
    findings = [line for line in verify.stderr.splitlines() if not line.startswith(("reading ", "checking "))]
    assert not findings, verify.stderr


def test_closure_info_files_match_nixpkgs(built_out: Path, system_closure: SystemClosure, tmp_path: Path) -> None:
    expected = tmp_path / "closure-info"
    expected.mkdir()
    subprocess.run(
        ["bash", "-c", CLOSURE_INFO_SCRIPT, "closure-info", str(system_closure.attrs_json), str(expected)],
        check=True,
        timeout=60,
    )
    for name in ("registration", "store-paths", "total-nar-size"):
        want = (expected / name).read_bytes()
        got = (built_out / name).read_bytes()
        assert got == want, (
            f"OUT/{name} differs from closureInfo's:\n--- closureInfo\n{want!r:.600}\n--- OUT\n{got!r:.600}"
        )
