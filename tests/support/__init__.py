"""Helpers for netbuild's integration tests: real Nix (nixstore), the store digest (digest) and
booting a kernel in QEMU (qemu)."""
