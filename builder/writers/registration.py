"""closureInfo's three files: `registration`, `store-paths`, `total-nar-size`.

Byte-for-byte what nixpkgs' closureInfo writes (its jq program over exportReferencesGraph): per
path in path order — path, narHash as sha256:<nix32>, narSize, an empty deriver line, the number
of references, then each reference — and `nix-store --load-db` reads exactly this.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.closure import VerifiedPath


def registration(paths: Sequence[VerifiedPath]) -> bytes:
    lines: list[str] = []
    for vp in sorted(paths, key=lambda p: p.path):
        lines += [vp.path, vp.nar_hash_nix32, str(vp.nar_size), "", str(len(vp.references)), *vp.references]
    return "".join(line + "\n" for line in lines).encode()


def store_paths(paths: Sequence[VerifiedPath]) -> bytes:
    return "".join(vp.path + "\n" for vp in sorted(paths, key=lambda p: p.path)).encode()


def total_nar_size(paths: Sequence[VerifiedPath]) -> bytes:
    return f"{sum(vp.nar_size for vp in paths)}\n".encode()
