"""`netbuild boot`, `netbuild serve`, `netbuild menu`: the netboot path."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
