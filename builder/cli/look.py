"""`netbuild check`, `netbuild inspect`, `netbuild diff`, `netbuild size`: looking inside."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
