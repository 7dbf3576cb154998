"""The `kernel-params` file: the whole kernel command line on one line."""

from __future__ import annotations


def kernel_params(cmdline: str) -> bytes:
    return (cmdline + "\n").encode()
